"""optim.name and report_to: Adafactor (both modes) and Prodigy train a few steps and resume to the weights of an
unbroken run; 8-bit AdamW says it needs CUDA before any work; TensorBoard and offline wandb get the config and
the validation images, report_to=none writes no logs."""

import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from latentforge.config_loader import load_config
from latentforge.resources import config_file
from latentforge.training import unet as unet_trainer

QUICK = ["ema.enabled=false", "validation.prompts=[]", "checkpoint.every_steps=1", "data.num_samples=8"]


def _train(out, *overrides):
    config = load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={out}", *QUICK, *overrides],
    )
    return unet_trainer.train(config)


def _unet(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize(
    "optim",
    [
        ["optim.name=adafactor", "optim.learning_rate=1e-3"],
        ["optim.name=adafactor", "optim.adafactor_relative_step=true"],
        pytest.param(["optim.name=prodigy", "optim.learning_rate=1.0"], id="prodigy"),
    ],
    ids=lambda o: "-".join(v.split("=")[1] for v in o),
)
def test_optimizer_trains_and_resumes_to_the_unbroken_runs_weights(optim, tmp_path):
    if "optim.name=prodigy" in optim:
        pytest.importorskip("prodigyopt")
    initial = unet_trainer.load_components(
        load_config(unet_trainer.UNetTrainConfig, config_file("train", "smoke-unet"))
    ).unet.state_dict()
    straight = _unet(_train(tmp_path / "straight", "optim.max_steps=3", *optim))
    assert max((straight[k] - initial[k]).abs().max().item() for k in straight) > 1e-5, "nothing trained"
    _train(tmp_path / "resumed", "optim.max_steps=2", *optim)
    resumed = _unet(_train(tmp_path / "resumed", "optim.max_steps=3", "checkpoint.resume=latest", *optim))
    assert max((straight[k] - resumed[k]).abs().max().item() for k in straight) <= 1e-6
    with safe_open(
        tmp_path / "straight" / "model" / "unet" / "diffusion_pytorch_model.safetensors", "pt"
    ) as file:
        header = file.metadata()  # the training settings travel with the export
    assert header["ss_optimizer"] == optim[0].split("=")[1] and header["ss_steps"] == "3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_8bit_adamw_without_cuda_says_so_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="adamw8bit needs a CUDA GPU.*optim.name=adamw"):
        _train(tmp_path / "run", "optim.name=adamw8bit")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"optim.name must be one of \['adamw', 'adamw8bit'"):
        _train(tmp_path / "run", "optim.name=lion")
    with pytest.raises(ValueError, match="report_to must be one of"):
        _train(tmp_path / "run", "report_to=mlflow")


def test_trackers_get_config_and_images_and_none_writes_no_logs(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # offline without a key: no network needed
    monkeypatch.setenv("WANDB_SILENT", "true")
    prompts = ['validation.prompts=["a red circle"]', "validation.num_inference_steps=1"]
    _train(tmp_path / "all", "optim.max_steps=1", "report_to=all", *prompts)
    logs = tmp_path / "all" / "logs"
    assert list(logs.rglob("events.out.tfevents.*")), "no TensorBoard events"
    (run,) = (logs / "wandb").glob("offline-run-*")
    (records,) = run.glob("*.wandb")  # what `wandb sync` uploads: the config is in it
    # wandb's service process writes this log on its own; on a loaded machine it can lag the run's finish
    deadline = time.monotonic() + 60
    while b"optim.max_steps" not in records.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert b"optim.max_steps" in records.read_bytes()
    assert list(run.rglob("media/images/validation_*.png")), "the validation image did not reach wandb"

    _train(tmp_path / "none", "optim.max_steps=1", "report_to=none")
    assert not list((tmp_path / "none").rglob("events.out.tfevents.*"))
    assert (tmp_path / "none" / "model" / "unet").is_dir()
