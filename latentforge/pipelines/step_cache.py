"""Step caching: reuse the U-Net's deep features between adjacent denoising steps.

DeepCache (Ma, Fang & Wang 2023, "DeepCache: Accelerating Diffusion Models for Free", sections 3.2-3.3): the
output of a U-Net's deep layers changes slowly from one step to the next, while the shallow skip branch
carries the detail. Every `interval`-th step (the first one included) runs the whole U-Net and keeps the
outputs of its deep modules; the steps between reuse them and compute only the shallowest branch: `conv_in`,
the last layer of the last up block (fed the kept deep features and the fresh `conv_in` skip) and `conv_out`.
This is DeepCache's uniform schedule at its shallowest branch (`cache_branch_id=0`), the setting its README
uses for Stable Diffusion 1.5. `warmup` > 0 runs the first steps all in full before that schedule starts, as
diffusers' caching hooks leave the first, noisiest steps uncached (FasterCache's and pyramid attention
broadcast's timestep skip ranges, TaylorSeer's `disable_cache_before_step`): there the layout and colours are
decided and the deep features change fastest.

The switch (`enable`) puts a diffusers `ModelHook` on each deep module; the hooks do nothing unless a denoising
call is running with a `StepCache` of its own (`call_cache`, a context variable), so the kept features are per
call and per thread, and the U-Net runs unchanged outside our loop (e.g. in diffusers' own pipelines).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from diffusers.hooks.hooks import HookRegistry, ModelHook

HOOK_NAME = "latentforge_step_cache"
# Mean absolute pixel difference (pixels in [0, 1]) from the exact images that interval 3, or 5 after 3 warm-up
# steps, stays within on the default model at its defaults (measured 0.039 and 0.017 over 360 images): DeepCache
# moves an edge by a pixel here and there, so a single pixel may change a lot while the image stays close.
MEAN_PIXEL_TOLERANCE = 0.08
# The fast preset's schedule (interval, warm-up): at 20 steps the full steps are 0-3, 8, 13, 18 (README "Speed").
FAST_SCHEDULE = (5, 3)
_ACTIVE: contextvars.ContextVar[StepCache | None] = contextvars.ContextVar(HOOK_NAME, default=None)


@dataclasses.dataclass
class StepCache:
    """One call's cache: the deep modules' outputs of the last full step, and whether this step reuses them."""

    interval: int
    warmup: int = 0
    outputs: dict[int, Any] = dataclasses.field(default_factory=dict)
    reuse: bool = False

    def start_step(self, index: int) -> None:
        """Step `index` of the loop (0 = first) is full when it is one of the first `warmup` steps or a multiple
        of the interval counted from there."""
        full = index < self.warmup or (index - self.warmup) % self.interval == 0
        self.reuse = not full and bool(self.outputs)


class _ReuseOutput(ModelHook):
    """On a full step run the module and keep its output under `key`; on a cached step return what was kept."""

    def __init__(self, key: int, interval: int, warmup: int):
        super().__init__()
        self.key, self.interval, self.warmup = key, interval, warmup

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        cache = _ACTIVE.get()
        if cache is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        if cache.reuse:
            return cache.outputs[self.key]
        output = self.fn_ref.original_forward(*args, **kwargs)
        cache.outputs[self.key] = output
        return output


def deep_modules(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules a cached step skips: every down block, the mid block, every up block but the last, and the
    last up block's layers but its last (resnet and attention) one."""
    last = unet.up_blocks[-1]
    attentions = getattr(last, "attentions", None) or []
    mid = [unet.mid_block] if unet.mid_block is not None else []
    return [*unet.down_blocks, *mid, *unet.up_blocks[:-1], *last.resnets[:-1], *attentions[:-1]]


def enable(unet: torch.nn.Module, interval: int, warmup: int = 0) -> None:
    """Install the hooks on `unet`'s deep modules (replacing earlier ones); interval 1 = every step is full;
    the first `warmup` steps are full whatever the interval."""
    for name, value, least in (("interval", interval, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"enable_step_cache: {name} must be an int >= {least}, got {value!r}")
    disable(unet)
    for key, module in enumerate(deep_modules(unet)):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(
            _ReuseOutput(key, interval, warmup), HOOK_NAME
        )


def disable(unet: torch.nn.Module) -> None:
    """Remove the hooks; the U-Net's modules run their own forward again."""
    for module in deep_modules(unet):
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            registry.remove_hook(HOOK_NAME, recurse=False)


def settings_of(unet: torch.nn.Module) -> tuple[int, int] | None:
    """The (interval, warmup) `enable` set on `unet`, or None when step caching is off."""
    registry = getattr(deep_modules(unet)[0], "_diffusers_hook", None)
    hook = registry.get_hook(HOOK_NAME) if registry is not None else None
    return (hook.interval, hook.warmup) if hook is not None else None


@contextlib.contextmanager
def call_cache(unet: torch.nn.Module) -> Iterator[StepCache | None]:
    """A fresh `StepCache` active in this thread for one denoising call (None when caching is off)."""
    settings = settings_of(unet)
    if settings is None:
        yield None
        return
    cache = StepCache(*settings)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)
