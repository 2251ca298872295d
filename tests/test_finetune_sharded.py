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


WORKER = """
import sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from latentforge.models.components import Components
from latentforge.training.sharding import full_copy, is_sharded
dist.init_process_group("gloo")
rank = dist.get_rank()
unet = Components.from_architecture("tiny", seed=0).unet
reference = {k: v.clone() for k, v in unet.state_dict().items()}
mesh = torch.distributed.device_mesh.init_device_mesh("cpu", (dist.get_world_size(),))
for block in [*unet.down_blocks, *unet.up_blocks]:
    fully_shard(block, mesh=mesh)
fully_shard(unet, mesh=mesh)
assert is_sharded(unet)
local = sum(p.to_local().numel() for p in unet.parameters())
copy = full_copy(unet, rank == 0)
if rank == 0:
    state = copy.state_dict()
    assert type(copy).__name__ == "UNet2DConditionModel" and not is_sharded(copy)
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)
    assert local < sum(v.numel() for v in reference.values())  # this process held a shard only
    open(sys.argv[1], "w").write("equal")
else:
    assert copy is None
text_encoder = Components.from_architecture("tiny", seed=0).text_encoder.eval()
ids = torch.tensor([[0, 5, 9, 2]])
expected = text_encoder(ids).last_hidden_state
fully_shard(text_encoder, mesh=mesh)
copy = full_copy(text_encoder, rank == 0)
if rank == 0:  # a working module: buffers outside the state dict (position ids) came along
    torch.testing.assert_close(copy(ids).last_hidden_state, expected)
dist.destroy_process_group()
"""


def test_full_copy_gathers_fsdp2_shards_into_the_whole_model(tmp_path):
    """The export's gather under real FSDP2 sharding (torch's fully_shard on 2 gloo CPU processes, which
    accelerate itself enables only on GPUs): the main process gets the exact unsharded weights."""
    (tmp_path / "worker.py").write_text(WORKER)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        str(tmp_path / "worker.py"),
    ]
    done = subprocess.run([*command, str(tmp_path / "result")], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "result").read_text() == "equal"


def test_full_copy_of_an_unsharded_module_is_the_module_itself():
    from latentforge.models.components import Components
    from latentforge.training.sharding import full_copy

    unet = Components.from_architecture("tiny").unet
    assert full_copy(unet, True) is unet and full_copy(unet, False) is unet


def test_lora_under_fsdp_is_refused_naming_ddp(monkeypatch, tmp_path):
    from latentforge.training.unet import check_config

    config = load_config(UNetTrainConfig, config_file("train", "smoke-lora"), [f"output_dir={tmp_path}"])
    check_config(config)  # fine unsharded
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="LoRA under FSDP.*ddp.yaml"):
        check_config(config)
