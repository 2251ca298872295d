"""Outputs that are whole or absent: a file or folder is written under a temporary name beside its target and
renamed into place when complete, so a kill or a full disk never leaves an output that looks finished, and an
earlier output at the target survives a write that fails. Every writer of a model, checkpoint or image uses
`staged_folder` or `staged_file`."""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK, OLD_MARK = ".tmp-", ".old-"


def fsync(path: Path) -> None:
    """Flush `path` (a file or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, then the folder itself."""
    for file in folder.rglob("*"):
        if file.is_file():
            fsync(file)
    fsync(folder)


def _tidy(final: Path) -> None:
    """Remove what an interrupted write left beside `final`; an earlier output moved aside just before a kill
    (`final` missing) is put back."""
    name = glob.escape(final.name)  # a name such as "model[1]" is not a pattern
    for old in sorted(final.parent.glob(f".{name}{OLD_MARK}*")):
        if not final.exists():
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in final.parent.glob(f".{name}{TMP_MARK}*"):
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(tmp: Path, final: Path) -> None:
    """Put the complete folder `tmp` at `final`; an earlier `final` is removed only once the new one is there."""
    old = final.with_name(f".{final.name}{OLD_MARK}{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def as_write_error(err: Exception) -> OSError | None:
    """`err` as an OSError when it is a failed write, however the writer said so (an OSError; safetensors'
    "I/O error: ... (os error N)"; torch.save's zip writer); None for any other error."""
    if isinstance(err, OSError):
        return err
    text = str(err)
    if not any(sign in text for sign in ("I/O error", "PytorchStreamWriter", "inline_container")):
        return None
    code = re.search(r"os error (\d+)", text)
    return OSError(int(code.group(1)) if code else errno.EIO, text)


def write_failed(err: OSError, what: str, kept: str) -> OSError:
    """`err` (a full disk, a file-size limit, a read-only folder) as an OSError of its own class (a
    PermissionError stays one) that says what was not written and what is intact."""
    reason = err.strerror or str(err)
    full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    hint = "; free some space and run again" if full else "; check the free space and permissions there"
    message = f"could not write {what} ({reason}); {kept}{hint}"
    try:
        failed = type(err)(message)
    except TypeError:  # a subclass whose constructor wants other arguments
        failed = OSError(message)
    failed.errno = err.errno  # kept for callers; the message stays free of "[Errno N]"
    failed.kept = kept  # marks it as said: a caller passes it on as it is (`is_said`)
    return failed


def is_said(err: BaseException | None) -> bool:
    """Whether `err` is already a `write_failed` error (saying what is intact), not to be wrapped again."""
    return isinstance(err, OSError) and isinstance(getattr(err, "kept", None), str)


def _failed_write(err: Exception, final: Path) -> OSError | None:
    """`err` as the OSError to raise when it is a failed write of `final` (saying what is intact), else None."""
    if (failed := as_write_error(err)) is None:
        return None
    kept = f"the earlier {final} is unchanged" if final.exists() else f"nothing was written at {final}"
    return write_failed(failed, final, kept)


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A new temporary folder beside `final` to write the output into; when the block ends it replaces `final`.
    When the block fails, the temporary folder goes and `final` is as it was (OSError: says so)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    _tidy(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        replace_folder(tmp, final)
    except Exception as err:
        if (failed := _failed_write(err, final)) is None:
            raise
        raise failed from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_file(final: Path) -> Iterator[Path]:
    """A hidden temporary path beside `final` to write one file to; when the block ends the file is flushed and
    renamed over `final`. When the block fails the temporary file goes and `final` is as it was (a failed write:
    an OSError that says so)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, final)
    except Exception as err:
        if (failed := _failed_write(err, final)) is None:
            raise
        raise failed from err
    finally:
        tmp.unlink(missing_ok=True)
