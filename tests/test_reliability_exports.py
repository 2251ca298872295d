"""Atomic outputs (issue 21 items 2-3): exports and checkpoints are written beside their place and renamed in
whole, so a full disk (the kernel's file-size limit, or an injected ENOSPC) or a kill mid-write never leaves
an output that looks complete, and an earlier output at the target survives byte for byte."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest

from latentforge.atomic_files import staged_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import disk_full  # noqa: E402


@pytest.mark.parametrize("fault", list(disk_full.FAULTS))
@pytest.mark.parametrize("case", list(disk_full.CASES))
def test_a_full_disk_keeps_the_earlier_output_and_says_so(tmp_path, case, fault):
    outcome = disk_full.CASES[case](tmp_path, disk_full.FAULTS[fault])
    assert outcome.error, "the write under a full disk did not fail"
    assert outcome.intact, f"{case}: the earlier output changed"
    assert outcome.leftovers == [], f"{case}: left {outcome.leftovers}"
    assert outcome.clear, outcome.error
    assert "[Errno" not in outcome.error and "Traceback" not in outcome.error


def _write(folder: Path, text: str) -> None:
    (folder / "weights").write_text(text)
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text("{}")


def test_a_failed_write_leaves_nothing_where_nothing_was(tmp_path):
    target = tmp_path / "model"
    failing = pytest.raises(OSError, match=r"could not write .*model \(No space left.*nothing was written at")
    with failing, staged_folder(target) as staging:
        _write(staging, "new")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_error_that_is_not_a_write_passes_through_and_keeps_the_earlier_output(tmp_path):
    target = tmp_path / "model"
    with staged_folder(target) as staging:
        _write(staging, "old")
    with pytest.raises(KeyError), staged_folder(target) as staging:
        _write(staging, "new")
        raise KeyError("a bug, not a full disk")
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("name", ["model", "model[1]"])  # a name with glob characters
def test_a_kill_between_the_two_renames_gives_the_earlier_output_back(tmp_path, name):
    """replace_folder moves the old output aside, then the new one in: a kill between the two leaves only the
    hidden old one; the next write puts it back first, and a stale staging folder is removed."""
    target = tmp_path / name
    aside = tmp_path / f".{name}.old-12345"
    aside.mkdir()
    _write(aside, "old")
    (tmp_path / f".{name}.tmp-abc").mkdir()  # a staging folder of the killed process
    with pytest.raises(OSError, match="the earlier .* is unchanged"), staged_folder(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with staged_folder(target) as staging:
        _write(staging, "new")
    assert (target / "weights").read_text() == "new" and (target / "sub" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_full_disk_is_one_line_from_the_command_line(monkeypatch, capsys, code):
    from latentforge.cli import main
    from latentforge.commands import export

    def full(args):
        raise OSError(code, os.strerror(code), "out/model/unet/diffusion_pytorch_model.safetensors")

    monkeypatch.setattr(export, "_run", full)
    assert main(["export", "a", "b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("latentforge export: error: ")
    assert (
        os.strerror(code) in err and "diffusion_pytorch_model.safetensors" in err and "free some space" in err
    )


def test_other_os_errors_are_not_hidden(monkeypatch):
    from latentforge.cli import main
    from latentforge.commands import export

    def broken(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(export, "_run", broken)
    with pytest.raises(OSError, match="Input/output"):
        main(["export", "a", "b"])


def test_a_permission_error_inside_a_staged_write_stays_one_permission_line(monkeypatch, capsys, tmp_path):
    from latentforge.cli import main
    from latentforge.commands import export

    def read_only(args):
        with staged_folder(tmp_path / "model") as staging:
            raise PermissionError(errno.EACCES, "Permission denied", str(staging / "weights"))

    monkeypatch.setattr(export, "_run", read_only)
    assert main(["export", "a", "b"]) == 2  # was an OSError the full-disk handler re-raised
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "Permission denied" in err
        and "permissions" in err
        and err.count("permissions") == 1
    )


def test_a_full_disk_while_writing_the_latent_cache_leaves_no_cache_and_says_so(
    tmp_path, monkeypatch, capsys
):
    from safetensors import SafetensorError

    from latentforge.cli import main
    from latentforge.training import latent_cache

    def full_disk(tensors, path):
        Path(path).write_bytes(b"\0" * 64)  # what got written before the disk filled
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(latent_cache, "save_file", full_disk)
    run = tmp_path / "run"
    assert main(["train", "unet", "--config", "smoke-unet", "-o", str(run)]) == 2
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("latentforge train: error: ")]
    assert len(said) == 1 and "Traceback" not in err, err
    assert str(run / "cache") in said[0] and "No space left" in said[0] and "free some space" in said[0]
    assert not any((run / "cache").iterdir()), "a cache (or its staging folder) was left"
