"""`latentforge train` from the user's side: Ctrl-C and SIGTERM save a checkpoint and stop with one line,
the run continues from it, a finished run says there is nothing to train, and validation lines are written
above the progress bar."""

from __future__ import annotations

import os
import re
import signal

import pytest
import torch

from latentforge import cli
from latentforge.training import vae
from latentforge.training.run import TrainingRun


def _stop_after_step(monkeypatch, step: int, stop) -> None:
    """Make `stop()` happen right after optimizer step `step` (as a Ctrl-C or a kill would, between steps)."""
    real = TrainingRun.end_step

    def end_step(self, logs, models):
        real(self, logs, models)
        if self.step == step:
            stop()

    monkeypatch.setattr(TrainingRun, "end_step", end_step)


def _ctrl_c():
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("stop", "code"), [(_ctrl_c, 130), (lambda: os.kill(os.getpid(), signal.SIGTERM), 143)]
)
def test_an_interrupted_run_saves_a_checkpoint_says_so_in_one_line_and_continues(
    tmp_path, monkeypatch, capsys, stop, code
):
    run = tmp_path / "run"
    argv = ["train", "vae", "--config", "smoke-vae", "-o", str(run)]  # 4 steps, a checkpoint every 2
    _stop_after_step(monkeypatch, 3, stop)
    assert cli.main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"latentforge train: interrupted: training stopped at step 3 of 4; saved {run / 'checkpoints' / 'checkpoint-3'}; "
        "continue with checkpoint.resume=latest"
    )
    monkeypatch.undo()
    assert cli.main([*argv, "checkpoint.resume=latest"]) == 0
    assert "resumed from" in capsys.readouterr().out and (run / "model" / "vae").is_dir()
    assert cli.main([*argv, "checkpoint.resume=latest"]) == 0
    assert "nothing to train: the checkpoint is at step 4 and optim.max_steps=4" in capsys.readouterr().out


def test_validation_lines_are_written_above_the_progress_bar(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(vae.tqdm, "write", lambda line, *args, **kwargs: written.append(line))
    assert cli.main(["train", "vae", "--config", "smoke-vae", "-o", str(tmp_path / "run")]) == 0
    assert any(line.startswith("step 4: held-out PSNR") for line in written), written


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("stage", ["vae", "unet"])
def test_a_refused_fsdp_launch_leaves_no_output_folder(stage, tmp_path, monkeypatch, capsys):
    # the run lock used to create output_dir (and its .lock) before the refusal
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    run = tmp_path / "run"
    assert cli.main(["train", stage, "--config", f"smoke-{stage}", "-o", str(run)]) == 2
    assert "FSDP needs CUDA GPUs" in capsys.readouterr().err
    assert not run.exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.max_upscale=0.5", "must be 0 .no limit. or >= 1"),
        ("data.max_upscale=1", "needs data.buckets=true"),
    ],
)
def test_a_bad_max_upscale_is_named_before_any_model_loads(setting, message, tmp_path, monkeypatch, capsys):
    from latentforge.training import unet

    def load_components(config):
        raise AssertionError("the models loaded before the check")

    monkeypatch.setattr(unet, "load_components", load_components)
    run = tmp_path / "run"
    assert cli.main(["train", "unet", "--config", "smoke-unet", setting, "-o", str(run)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not run.exists()
