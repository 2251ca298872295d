"""The speed modes the benchmarks compare, each a switch on shared components and its undo.

A mode changes the modules both pipelines share (memory format, attention processors, a compiled U-Net), so
diffusers' pipeline runs with it too; the step-cache hooks act only inside latentforge's own denoising loop, so
in those modes diffusers runs its exact path (a fair baseline, not a cached one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from latentforge.pipelines import step_cache

Undo = Callable[[], None]


def _memory_format(components, memory_format) -> None:
    components.unet.to(memory_format=memory_format)
    components.vae.to(memory_format=memory_format)


def exact(components):
    return components, lambda: None


def channels_last(components):
    _memory_format(components, torch.channels_last)
    return components, lambda: _memory_format(components, torch.contiguous_format)


def compile_channels_last(components):
    """inductor on the U-Net (fixed shapes: the first call per shape compiles), channels-last activations."""
    _memory_format(components, torch.channels_last)
    compiled = dataclasses.replace(components, unet=torch.compile(components.unet, fullgraph=False))
    return compiled, lambda: _memory_format(components, torch.contiguous_format)


def xformers(components):
    from diffusers.models.attention_processor import AttnProcessor2_0

    components.unet.enable_xformers_memory_efficient_attention()
    components.vae.enable_xformers_memory_efficient_attention()

    def undo() -> None:
        components.unet.set_attn_processor(AttnProcessor2_0())
        components.vae.set_attn_processor(AttnProcessor2_0())

    return components, undo


def step_cache_3(components):
    step_cache.enable(components.unet, 3)
    return components, lambda: step_cache.disable(components.unet)


def fast(components):
    """`pipe.enable_fast()`: step caching on the preset's schedule (step_cache.FAST_SCHEDULE) and channels-last."""
    step_cache.enable(components.unet, *step_cache.FAST_SCHEDULE)
    _memory_format(components, torch.channels_last)

    def undo() -> None:
        step_cache.disable(components.unet)
        _memory_format(components, torch.contiguous_format)

    return components, undo


MODES = {
    "exact": exact,
    "channels-last": channels_last,
    "compile+channels-last": compile_channels_last,
    "xformers": xformers,
    "step-cache-3": step_cache_3,
    "fast": fast,
}
CUDA_ONLY = ("xformers",)
