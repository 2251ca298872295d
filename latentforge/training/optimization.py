"""The optimizer side of a run: the optimizer `optim.name` names (AdamW, 8-bit AdamW, Adafactor, Prodigy) with
its LR schedule, the EMA of the trained weights, one optimizer
step (`OptimizerUpdate`), and the EMA weights swapped in for a while (validation)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from latentforge.training.train_config import EMAConfig, OptimConfig

OPTIMIZERS = ("adamw", "adamw8bit", "adafactor", "prodigy")
_PACKAGES = {"adamw8bit": "bitsandbytes", "prodigy": "prodigyopt"}


def check_optimizer(optim: OptimConfig) -> None:
    """Refuse an unknown `optim.name`, 8-bit AdamW without CUDA and a missing extra, before any heavy work."""
    if optim.name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {list(OPTIMIZERS)}, got {optim.name!r}")
    if optim.name == "adamw8bit" and not torch.cuda.is_available():
        raise ValueError(
            "optim.name=adamw8bit needs a CUDA GPU: bitsandbytes' 8-bit AdamW keeps its state on CUDA only. "
            "On this machine use optim.name=adamw, or optim.name=adafactor for the least optimizer memory"
        )
    package = _PACKAGES.get(optim.name)
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(f"optim.name={optim.name} needs the {package} package: pip install {package}")
    if optim.adafactor_relative_step and optim.name != "adafactor":
        raise ValueError(f"optim.adafactor_relative_step=true is for optim.name=adafactor, not {optim.name}")


def _optimizer(params, optim: OptimConfig, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """The optimizer `optim.name` names, over `params` (or param groups, which may carry their own lr)."""
    lr, decay = optim.learning_rate, optim.weight_decay
    if optim.name == "adafactor":
        from transformers.optimization import Adafactor

        if optim.adafactor_relative_step:  # its own step size: learning_rate is not used
            return Adafactor(params, lr=None, relative_step=True, scale_parameter=True, weight_decay=decay)
        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, weight_decay=decay)
    if optim.name == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(params, lr=lr, betas=betas, eps=optim.adam_epsilon, weight_decay=decay)
    if optim.name == "adamw8bit":
        from bitsandbytes.optim import AdamW8bit

        return AdamW8bit(params, lr=lr, betas=betas, eps=optim.adam_epsilon, weight_decay=decay)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=optim.adam_epsilon, weight_decay=decay)


def make_optimizer(
    params: Iterable[torch.nn.Parameter], optim: OptimConfig, betas: tuple[float, float] | None = None
) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer of `optim.name` over `params` (or param groups) and its LR schedule (diffusers'
    get_scheduler; Adafactor's own relative step with adafactor_relative_step). `TrainingRun` has already
    checked `optim` (`check_optimizer`) before anything was loaded."""
    optimizer = _optimizer(params, optim, betas or (optim.adam_beta1, optim.adam_beta2))
    if optim.adafactor_relative_step:
        from transformers.optimization import AdafactorSchedule

        return optimizer, AdafactorSchedule(optimizer)  # reports the step size Adafactor chose, for the logs
    scheduler = get_scheduler(
        optim.lr_scheduler, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=optim.max_steps
    )
    return optimizer, scheduler


def make_ema(parameters: Iterable[torch.nn.Parameter], config: EMAConfig) -> EMAModel | None:
    """diffusers `EMAModel` over `parameters` (with warm-up); None when off. Register it with the run's
    checkpoints (`run.checkpoints.register`)."""
    if not config.enabled:
        return None
    return EMAModel(
        list(parameters),
        decay=config.decay,
        use_ema_warmup=config.use_warmup,
        inv_gamma=config.inv_gamma,
        power=config.power,
    )


@contextmanager
def ema_weights(ema: EMAModel | None, params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """The EMA weights in `params` inside the block, the trained ones back after it (also on an error);
    nothing happens when `ema` is None."""
    if ema is None:
        yield
        return
    params = list(params)
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def _always(step: int) -> bool:
    return True


@dataclass
class OptimizerUpdate:
    """One optimizer of a trainer: the parameters it clips and steps, its LR schedule, the EMA following
    those parameters, when it steps and what follows each of its steps."""

    optimizer: Any
    scheduler: Any
    params: list[torch.nn.Parameter]
    ema: Any = None  # EMAModel over `params`, updated after each applied step (None = no EMA)
    active: Callable[[int], bool] = _always  # f(optimizer steps done): step in this window? (VAE disc_start)
    after: Callable[[], None] | None = (
        None  # after each applied step and EMA update (CLIP clamps logit_scale)
    )

    def apply(self, accelerator: Accelerator, max_grad_norm: float) -> None:
        """Clip (max_grad_norm > 0), step, schedule, update the EMA, then `after`."""
        if max_grad_norm > 0:
            accelerator.clip_grad_norm_(self.params, max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step(self.params)
        if self.after is not None:
            self.after()
