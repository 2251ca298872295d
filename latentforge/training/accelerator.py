"""The Accelerator of a training run: device, mixed precision, gradient accumulation, seeded data order,
the trackers of `report_to`; and the run's config.yaml, written as it starts."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    GradientAccumulationPlugin,
    ProjectConfiguration,
    set_seed,
)

from latentforge.config_loader import config_to_dict, save_config
from latentforge.training.checkpoints import refuse_overwriting_checkpoints
from latentforge.training.run_dir import RunDir
from latentforge.training.trackers import init_kwargs, trackers_of
from latentforge.training.train_config import TrainConfig


def make_accelerator(config: TrainConfig, project_name: str) -> Accelerator:
    """Accelerator for `config` (CPU when no CUDA), its trackers (`report_to`) under logs/, seeded per process;
    writes the run's config.yaml."""
    refuse_sharding_without_cuda()
    run_dir = RunDir.of(config.output_dir)
    refuse_overwriting_checkpoints(run_dir.root, config.checkpoint.resume)  # before anything is written there
    trackers = trackers_of(config.report_to)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        # Windows must not be cut at epoch ends, so that step N always means N * accumulation micro-batches.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.optim.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        # Shuffle order is a function of (seed, epoch) alone: resume replays it exactly.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        project_config=ProjectConfiguration(project_dir=str(run_dir.root), logging_dir=str(run_dir.logs)),
        log_with=trackers or None,
    )
    set_seed(config.seed, device_specific=True)
    hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in _flat(config).items()}
    accelerator.init_trackers(project_name, config=hparams, init_kwargs=init_kwargs(trackers, run_dir.logs))
    if accelerator.is_main_process:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir.config)
    return accelerator


def refuse_sharding_without_cuda() -> None:
    """accelerate (1.15) turns FSDP and DeepSpeed on only for GPU/accelerator process groups; launched for
    them on CPUs, each process would train plain DDP (or alone) without saying so. ValueError naming DDP."""
    for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "").lower() == "true" and not torch.cuda.is_available():
            raise ValueError(
                f"{name} needs CUDA GPUs: accelerate shards a model only across GPUs, and on this machine's CPUs "
                "the processes would not shard; launch with configs/accelerate/ddp.yaml (or --multi_gpu) instead"
            )


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config_to_dict(config).items() if dataclasses.is_dataclass(config) else config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
