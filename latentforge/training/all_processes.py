"""Decisions that every process of a run takes together: a process that raises alone leaves the others waiting
forever at their next barrier or collective, so a failure on one is made known to all before any moves on."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator

from latentforge import atomic_files as atomic


def failed_processes(accelerator: Accelerator, err: Exception | None) -> list[tuple[int, int]]:
    """(rank, errno of its failed write, or 0 for another error) of each process whose part failed; `err` is this
    process's error or None. Collective: every process calls it, and every one gets the same list."""
    write = atomic.as_write_error(err) if err is not None else None
    code = (write.errno or errno.EIO) if write is not None else 0
    mine = torch.tensor([[int(err is not None), code]], device=accelerator.device)
    everyone = accelerator.gather(mine).reshape(-1, 2).tolist()
    return [(rank, int(code)) for rank, (failed, code) in enumerate(everyone) if failed]


def run_together(
    accelerator: Accelerator, part: Callable[[], Any], what: str, kept: Callable[[], str]
) -> None:
    """Run this process's `part` of writing `what`; when it failed on any process, raise on every one. A
    failed write is the OSError of `atomic_files.write_failed` (saying `kept()`, what is intact) on every
    process; another error is re-raised where it happened and a RuntimeError naming that process elsewhere."""
    err = None
    try:
        part()
    except Exception as caught:  # noqa: BLE001 (raised below, once every process knows)
        err = caught
    failed = failed_processes(accelerator, err)
    if not failed:
        return
    write = atomic.as_write_error(err) if err is not None else None
    if err is not None and (write is None or atomic.is_said(err)):
        raise err  # another error, or a failed write that already says what is intact
    rank, code = failed[0]
    if write is None and not code:
        raise RuntimeError(f"could not write {what}: process {rank} failed (its error is above)")
    write = write or OSError(code, f"process {rank}: {errno.errorcode.get(code, code)}")
    raise atomic.write_failed(write, what, kept()) from err
