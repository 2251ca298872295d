"""The accelerate configurations shipped in configs/accelerate: DDP runs here (its 2-process run and resume are
in test_finetune_streaming.py); FSDP and DeepSpeed ZeRO-2 are GPU-only, and a launch for them on a machine
without CUDA is refused with a line that names DDP instead of training unsharded without a word."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from latentforge.config_loader import load_config
from latentforge.resources import config_file, configs_root
from latentforge.training.accelerator import make_accelerator
from latentforge.training.stage_configs import UNetTrainConfig

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = configs_root() / "accelerate"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")


def test_shipped_accelerate_configs_load():
    kinds = {p.stem: load_config_from_file(str(p)) for p in ACCELERATE.glob("*.yaml")}
    assert kinds["ddp"].distributed_type == DistributedType.MULTI_GPU
    assert kinds["fsdp"].distributed_type == DistributedType.FSDP
    assert kinds["fsdp"].fsdp_config["fsdp_version"] == 2
    assert kinds["fsdp"].fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # full weights to export
    assert kinds["deepspeed-zero2"].deepspeed_config["zero_stage"] == 2
    assert all(config.num_processes == 2 for config in kinds.values())


@no_cuda
@pytest.mark.parametrize("variable", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharding_is_refused_without_cuda_before_anything_is_written(variable, tmp_path, monkeypatch):
    monkeypatch.setenv(variable, "true")
    config = load_config(
        UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(ValueError, match="needs CUDA GPUs.*ddp.yaml"):
        make_accelerator(config, "unet")
    assert not (tmp_path / "run").exists()


@no_cuda
def test_fsdp_launch_on_cpus_stops_with_the_reason(tmp_path):
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE / "fsdp.yaml"),
    ]
    command = [
        *launcher,
        "-m",
        "latentforge",
        "train",
        "unet",
        "--config",
        "smoke-unet",
        f"output_dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    assert "FSDP needs CUDA GPUs" in result.stderr + result.stdout
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model").exists()
