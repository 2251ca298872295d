"""One training process per output_dir: `output_dir/.lock` holds an advisory lock (fcntl.flock) and the pid
of its holder. The kernel drops the lock when the holder dies, however it dies (kill -9 included), so a stale
file never blocks a resume; a second run started while one is running is refused with the holder's pid."""

from __future__ import annotations

import os
import socket
from pathlib import Path

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # folder -> fd of the locks this process holds


class RunLocked(FileExistsError):
    """Another live process is training in this output_dir."""


def _flock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def acquire(output_dir: str | Path) -> Path:
    """Lock `output_dir` for this process (creating it); RunLocked names the holder when another has it.

    A lock this process already holds (a run in it that raised before `release`) is taken over. Under
    `accelerate launch` only the first process (RANK 0) locks: the others belong to the same run."""
    root = Path(output_dir).resolve()
    if (
        os.name != "posix" or int(os.environ.get("RANK", "0")) != 0
    ):  # no flock, or not the run's first process
        return root / LOCK_FILE
    release(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _flock(fd):
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunLocked(
            f"{output_dir} is in use by another training run (process {holder}); wait for it to end or stop "
            "it, or give a different output_dir"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held[root] = fd
    return path


def release(output_dir: str | Path) -> None:
    """Drop this process's lock on `output_dir`, if it holds one (the file stays: deleting it would race a
    process that opened it and waits to lock it)."""
    fd = _held.pop(Path(output_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock
