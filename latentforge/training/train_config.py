"""Shared training setup: the config groups every trainer has, the accelerator, optimizer, EMA and the
model card. The step loop's chores live in `latentforge.training.run`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    GradientAccumulationPlugin,
    ProjectConfiguration,
    set_seed,
)

from latentforge.config_loader import config_to_dict
from latentforge.data.training_data import DataConfig
from latentforge.training.checkpoints import refuse_overwriting_checkpoints


@dataclass
class OptimConfig:
    """AdamW + a diffusers LR schedule."""

    learning_rate: float = 1e-4  # peak learning rate (per optimizer step, not scaled by batch size)
    adam_beta1: float = 0.9  # AdamW beta1
    adam_beta2: float = 0.999  # AdamW beta2
    adam_epsilon: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    lr_scheduler: str = "constant_with_warmup"  # any name of diffusers.optimization.get_scheduler
    warmup_steps: int = 0  # linear warm-up length in optimizer steps
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    batch_size: int = 16  # samples per process per micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_steps: int = 1000  # optimizer steps to train


@dataclass
class CheckpointConfig:
    """When to save, how many to keep, where to resume from."""

    every_steps: int = 500  # save every N optimizer steps (0 = only at the end)
    keep_last: int = 2  # keep the newest K complete checkpoints (0 = all); pruned after each save succeeds
    resume: str = ""  # "" = fresh run, "latest" = newest complete checkpoint in output_dir, or a folder


@dataclass
class EMAConfig:
    """Exponential moving average of the trained weights (diffusers EMAModel); exported when enabled."""

    enabled: bool = False  # keep an EMA copy and export it instead of the raw weights
    decay: float = 0.9999  # upper bound of the EMA decay
    use_warmup: bool = True  # decay = 1 - (1 + step / inv_gamma) ** -power, capped at `decay`
    inv_gamma: float = 1.0  # warm-up time scale
    power: float = 0.75  # warm-up exponent (3/4 suits runs of < 100k steps, per diffusers' notes)


@dataclass
class TrainConfig:
    """Settings every trainer has; each trainer's config extends this."""

    output_dir: str = "runs/train"  # checkpoints/, logs/, model/ (the export) go here
    seed: int = 0  # seeds weights init, data order and noise (per process: seed + rank)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # autocast dtype (fp16 needs a GPU)
    data: DataConfig = field(default_factory=DataConfig)  # what to train on
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer and schedule
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # checkpoints and resume
    ema: EMAConfig = field(default_factory=EMAConfig)  # EMA of the trained weights
    log_every: int = 10  # log scalars to TensorBoard every N steps
    max_nonfinite_steps: int = 5  # this many NaN/Inf losses in a row stop the run (each one is skipped)
    crash_after_steps: int = 0  # testing only: os._exit(75) after this step (and its checkpoint), like a kill


def make_accelerator(config: TrainConfig, project_name: str) -> Accelerator:
    """Accelerator for `config` (CPU when no CUDA), TensorBoard under output_dir/logs, seeded per process."""
    output_dir = Path(config.output_dir)
    refuse_overwriting_checkpoints(output_dir, config.checkpoint.resume)  # before anything is written there
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        # Windows must not be cut at epoch ends, so that step N always means N * accumulation micro-batches.
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.optim.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        # Shuffle order is a function of (seed, epoch) alone: resume replays it exactly.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        log_with="tensorboard",
    )
    set_seed(config.seed, device_specific=True)
    hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in _flat(config).items()}
    accelerator.init_trackers(project_name, config=hparams)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return accelerator


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config_to_dict(config).items() if dataclasses.is_dataclass(config) else config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def make_optimizer(
    params: Iterable[torch.nn.Parameter], optim: OptimConfig, betas: tuple[float, float] | None = None
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over `params` (or param groups) and its LR schedule (diffusers' get_scheduler), from `optim`."""
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(
        params,
        lr=optim.learning_rate,
        betas=betas or (optim.adam_beta1, optim.adam_beta2),
        eps=optim.adam_epsilon,
        weight_decay=optim.weight_decay,
    )
    scheduler = get_scheduler(
        optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=optim.max_steps
    )
    return optimizer, scheduler


def make_ema(parameters: Iterable[torch.nn.Parameter], config: EMAConfig) -> Any | None:
    """diffusers `EMAModel` over `parameters` (with warm-up); None when off. Register it with the run's
    checkpoints (`run.checkpoints.register`)."""
    if not config.enabled:
        return None
    from diffusers.training_utils import EMAModel

    ema = EMAModel(
        list(parameters),
        decay=config.decay,
        use_ema_warmup=config.use_warmup,
        inv_gamma=config.inv_gamma,
        power=config.power,
    )
    return ema


def write_model_card(
    folder: Path, title: str, config: TrainConfig, data_note: str, metrics: dict[str, Any]
) -> None:
    """README.md beside an export: what it is, the data, the measured numbers and the full config."""
    lines = [
        "---",
        "library_name: diffusers",
        "tags: [latentforge, text-to-image]",
        "---",
        f"# {title}",
        "",
        "Trained with latentforge. Reproduce with the config below (`latentforge train ... --config config.yaml`).",
        "",
        "## Data",
        "",
        data_note,
        "",
        "## Results",
        "",
        "```json",
        json.dumps(metrics, indent=2, default=str),
        "```",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(config_to_dict(config), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text("\n".join(lines))
