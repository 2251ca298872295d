"""Config groups every trainer has (optimizer, checkpoints, EMA, validation) and `TrainConfig`, the base of
each trainer's config. The run's machinery lives in `latentforge.training.run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentforge.data.data_config import DataConfig


@dataclass
class OptimConfig:
    """The optimizer (`name`) + a diffusers LR schedule."""

    # "adamw" (torch), "adamw8bit" (bitsandbytes, CUDA only: 8-bit optimizer state, ~75% less of it),
    # "adafactor" (transformers'; factored second moments, the least optimizer memory), "prodigy" (prodigyopt:
    # estimates its own step size; use learning_rate=1.0). Each extra package is imported only when chosen.
    name: str = "adamw"
    learning_rate: float = 1e-4  # peak learning rate (per optimizer step, not scaled by batch size)
    adam_beta1: float = 0.9  # AdamW beta1
    adam_beta2: float = 0.999  # AdamW beta2
    adam_epsilon: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.01  # decoupled weight decay (AdamW, Prodigy; Adafactor's own weight decay)
    # Adafactor only: its relative step size (1 / sqrt(step), scaled by each weight's RMS) replaces
    # learning_rate and lr_scheduler, as in the Adafactor paper and transformers' AdafactorSchedule
    adafactor_relative_step: bool = False
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
class ValidationConfig:
    """Held-out metrics and/or images during training (with the EMA weights when EMA is on)."""

    every_steps: int = 500  # validate every N optimizer steps (0 = only at the end)


@dataclass
class TrainConfig:
    """Settings every trainer has; each trainer's config extends this."""

    output_dir: str = "runs/train"  # the run's folders (see RunDir): checkpoints/, logs/, model/, ...
    seed: int = 0  # seeds weights init, data order and noise (per process: seed + rank)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # autocast dtype (fp16 needs a GPU)
    data: DataConfig = field(default_factory=DataConfig)  # what to train on
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer and schedule
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # checkpoints and resume
    ema: EMAConfig = field(default_factory=EMAConfig)  # EMA of the trained weights
    validation: ValidationConfig = field(default_factory=ValidationConfig)  # metrics/images during training
    log_every: int = 10  # log scalars to the trackers every N steps
    # where scalars, the config and validation images go: "tensorboard" (logs/), "wandb" (offline unless
    # WANDB_MODE=online or WANDB_API_KEY is set; `wandb sync` uploads later), "all" or "none"
    report_to: str = "tensorboard"
    max_nonfinite_steps: int = 5  # this many NaN/Inf losses in a row stop the run (each one is skipped)
