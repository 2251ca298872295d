"""The optimizer side of a run: AdamW with its LR schedule, the EMA of the trained weights, one optimizer
step (`OptimizerUpdate`), and the EMA weights swapped in for a while (validation)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from latentforge.training.train_config import EMAConfig, OptimConfig


def make_optimizer(
    params: Iterable[torch.nn.Parameter], optim: OptimConfig, betas: tuple[float, float] | None = None
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over `params` (or param groups) and its LR schedule (diffusers' get_scheduler), from `optim`."""
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
