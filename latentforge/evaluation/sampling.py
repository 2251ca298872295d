"""Images for evaluation from any text-to-image pipeline: ours, or any diffusers-layout model folder.

Image i of a run is drawn with its own CPU generator seeded `seed + i`, so a benchmark gives the same
images whatever the batch size (to one 8-bit level: the batch size changes the order of float sums), and a
single image can be regenerated on its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from latentforge.models.components import resolve_device
from latentforge.pipelines import TextToImagePipeline
from latentforge.pipelines.sampling_defaults import FALLBACK
from latentforge.pipelines.schedulers import make_scheduler


def resolve_dtype(name: str | None, device: str) -> str:
    """The precision `name` means on `device`: "auto" (or None) is float16 on CUDA, else float32."""
    if (name or "auto") != "auto":
        return name
    return "float16" if torch.device(device).type == "cuda" else "float32"


def load_pipeline(
    model: Any,
    device: str = "auto",
    scheduler: str | None = None,
    dtype: str | None = None,
    **file_options: Any,
) -> Any:
    """A text-to-image pipeline: `model` is a pipeline object (returned as is, moved to `device`), a
    diffusers-layout model folder or a single-file checkpoint (with `file_options`, see `Components.from_pretrained`), loaded
    as `latentforge.pipelines.TextToImagePipeline` in `dtype` ("auto": float16 on CUDA, else float32)."""
    device = resolve_device(device)
    if isinstance(model, (str, os.PathLike)):
        torch_dtype = getattr(torch, resolve_dtype(dtype, device))
        model = TextToImagePipeline.from_pretrained(model, torch_dtype=torch_dtype, **file_options)
    if scheduler:
        if hasattr(model, "set_scheduler"):  # ours
            model.set_scheduler(scheduler)
        else:  # diffusers
            model.scheduler = make_scheduler(scheduler, model.scheduler.config)
    model.to(device)
    if hasattr(model, "set_progress_bar_config"):
        model.set_progress_bar_config(disable=True)  # one bar over the whole run instead
    return model


def generate_images(
    pipe: Any,
    prompts: Sequence[str],
    seed: int = 0,
    num_inference_steps: int = FALLBACK.steps,
    guidance_scale: float = FALLBACK.guidance_scale,
    guidance_rescale: float = FALLBACK.guidance_rescale,
    negative_prompt: str | None = None,
    clip_skip: int | None = None,
    batch_size: int = 16,
    height: int | None = None,
    width: int | None = None,
    desc: str = "generating",
) -> list[Image.Image]:
    """One PIL image per prompt (`negative_prompt` for each), generated in batches; image i uses a CPU generator
    seeded `seed + i`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    images: list[Image.Image] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=desc, disable=len(starts) < 2):
        batch = list(prompts[start : start + batch_size])
        generators = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(batch))]
        output = pipe(
            prompt=batch,
            negative_prompt=[negative_prompt] * len(batch) if negative_prompt else None,
            clip_skip=clip_skip,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            generator=generators,
            height=height,
            width=width,
            output_type="pil",
        )
        images.extend(output.images)
    return images
