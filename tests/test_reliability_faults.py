"""Faults during training (issue 21 item 2): a U-Net run killed with SIGKILL during the cache build, a step, a
checkpoint write and the export, or after the cache build but before its first checkpoint (it starts over),
and stopped by an outside SIGTERM, resumes each time with checkpoint.resume=latest and ends with the straight
run's weights (EMA included); nothing half-written is
taken as complete; a full disk during a checkpoint keeps the earlier one resumable; a second process on the
same output_dir is refused, and a killed one's stale lock does not block the resume.

The kills happen at named points of a real child process (`benchmarks/fault_runs.py`); the random-moment kills
are `benchmarks/reliability.py --kills N`.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentforge import cli
from latentforge.config_loader import load_config
from latentforge.resources import config_file
from latentforge.training import checkpoints, unet
from latentforge.training.checkpoints import MARKER, is_complete

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fault_runs  # noqa: E402

OVERRIDES = ["optim.max_steps=6", "checkpoint.every_steps=2"]  # smoke-unet: EMA on, seconds long
RESUME = [*OVERRIDES, "checkpoint.resume=latest"]
# float tolerance, not bit equality: resumed steps replay the same ops, but the equality is what is promised
TOLERANCE = 1e-6


def _train(out: Path, *extra: str) -> Path:
    config = load_config(
        unet.UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={out}", *OVERRIDES, *extra]
    )
    return unet.train(config)


@pytest.fixture(autouse=True, scope="module")
def children_threads():
    """Runs in this process use the thread count of the killed children (fault_runs: OMP_NUM_THREADS, else
    1): CPU float sums depend on how many threads split them, so the comparison needs the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    _train(out)
    return out


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _assert_equal_to_straight(straight: Path, out: Path) -> None:
    worst = fault_runs.max_differences(straight, out, 6)
    assert max(worst.values()) <= TOLERANCE, f"resumed run differs from the straight run: {worst}"


def test_kills_in_every_phase_and_a_sigterm_each_resume_to_the_straight_run(straight, tmp_path):
    out, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"

    killed = fault_runs.run_training(out, OVERRIDES, fault_runs.CACHE_WRITE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not list((out / "cache").glob("*/meta.json")), "a half-written cache looks complete"
    assert _names(ckpts) == []

    killed = fault_runs.run_training(out, RESUME, fault_runs.STEP.format(n=3))  # during step 3
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _names(ckpts) == ["checkpoint-2"] and is_complete(ckpts / "checkpoint-2")
    assert (out / ".lock").read_text().split()[0] != "", "the lock names its holder"

    # SIGTERM from outside at step 5 (resumed at 2: the 3rd step of this process): saves and exits cleanly
    code, err = fault_runs.signal_at_fault_point(
        out, RESUME, fault_runs.STEP.format(n=3).replace("kill-before", "wait-after"), signal.SIGTERM
    )
    assert code == 143, err[-2000:]
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            f"training stopped at step 5 of 6; saved {ckpts / 'checkpoint-5'}; continue with checkpoint.resume=latest"
        )
    )
    assert is_complete(ckpts / "checkpoint-5")

    killed = fault_runs.run_training(out, RESUME, fault_runs.CHECKPOINT_WRITE.format(n=1))  # writing step 6
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (ckpts / ".tmp-step-6" / "model.safetensors").is_file(), "the kill did not land mid-checkpoint"
    assert "checkpoint-6" not in _names(ckpts)

    killed = fault_runs.run_training(out, RESUME, fault_runs.EXPORT_WRITE)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert is_complete(ckpts / "checkpoint-6") and ".tmp-step-6" not in _names(ckpts)
    (staged,) = out.glob(".model.tmp-*")
    assert (staged / "unet").is_dir() and not (out / "model").exists(), "a half-written export looks complete"

    _train(out, "checkpoint.resume=latest")  # the dead holder's lock file is still there: not in the way
    assert not list(out.glob(".model.tmp-*")) and (out / "model" / "README.md").is_file()
    _assert_equal_to_straight(straight, out)


def test_a_kill_before_the_first_checkpoint_restarts_on_the_straight_runs_noise(straight, tmp_path, capsys):
    """Killed after the latent cache is built but before checkpoint 2, the run starts over from nothing and
    finds the cache: building it must not have drawn from the RNG that the straight run then trained with
    (it did: the restart ended 0.01 away from the straight run)."""
    out = tmp_path / "run"
    killed = fault_runs.run_training(out, OVERRIDES, fault_runs.STEP.format(n=1))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list((out / "cache").glob("*/meta.json")) and _names(out / "checkpoints") == []
    _train(out, "checkpoint.resume=latest")
    assert "no complete checkpoint" in capsys.readouterr().out, "the restart did not start fresh"
    _assert_equal_to_straight(straight, out)


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_resumable(straight, tmp_path, monkeypatch):
    out, real = tmp_path / "run", checkpoints.save_objects

    def save_objects_on_a_full_disk(objects, folder):
        if folder.name.endswith("-4"):
            (folder / checkpoints.OBJECTS_TENSORS).write_bytes(b"\0" * 64)  # what got written before
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / checkpoints.OBJECTS_TENSORS))
        real(objects, folder)

    monkeypatch.setattr(checkpoints, "save_objects", save_objects_on_a_full_disk)
    with pytest.raises(OSError, match=r"could not write checkpoint 4 .*No space left on device.*") as err:
        _train(out)
    message = str(err.value)
    assert "newest: checkpoint-2; continue with checkpoint.resume=latest" in message, message
    assert "free some space" in message and err.value.errno == errno.ENOSPC and "[Errno" not in message
    assert _names(out / "checkpoints") == ["checkpoint-2"], "the failed write left files behind"
    assert is_complete(out / "checkpoints" / "checkpoint-2")
    monkeypatch.undo()
    _train(out, "checkpoint.resume=latest")
    _assert_equal_to_straight(straight, out)


def test_a_second_run_on_the_same_output_dir_is_refused_until_the_first_dies(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from latentforge.training import run_lock\n"
            "run_lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        argv = ["train", "unet", "--config", "smoke-unet", "-o", str(out), "optim.max_steps=2"]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"in use by another training run (process {holder.pid} on " in err, err
        assert "give a different output_dir" in err
        assert _names(out) == [".lock"], "the refused run wrote into the folder"
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(argv) == 0, capsys.readouterr().err  # the holder was killed: its lock went with it
    assert json.loads((out / "checkpoints" / "checkpoint-2" / MARKER).read_text())["step"] == 2
