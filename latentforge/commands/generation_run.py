"""The heavy half of `generate`/`img2img`/`inpaint`: load the pipeline, make the images batch by batch and
save each PNG with its record as soon as it is done (the settings were checked before this module loads)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch

from latentforge.commands.library_output import quiet_library_progress_bars
from latentforge.commands.png_record import GenerationRecord, sampler_name, save_png, shareable
from latentforge.imaging import make_grid
from latentforge.models.components import resolve_device
from latentforge.pipelines.call_args import CallArgs
from latentforge.pipelines.image_inputs import load_image
from latentforge.pipelines.pipeline import PIPELINES


def generate_images(record: GenerationRecord, paths: list[Path], batch_size: int, keep_paths: bool) -> None:
    """Make `record.num_images` images, `batch_size` per forward pass, and save them to `paths` (the grid last)."""
    quiet_library_progress_bars()
    image = load_image(record.image, "--image") if record.image else None
    mask = load_image(record.mask, "--mask", mode="L") if record.mask else None
    record.device = resolve_device(record.device)
    if (record.dtype or "auto") == "auto":
        record.dtype = "float16" if torch.device(record.device).type == "cuda" else "float32"
    pipe = PIPELINES[record.task].from_pretrained(record.model, torch_dtype=getattr(torch, record.dtype))
    pipe.to(record.device)
    if record.scheduler:
        pipe.set_scheduler(record.scheduler)
    record.model_scheduler = sampler_name(type(pipe.scheduler).__name__, dict(pipe.scheduler.config))
    _check_weights_hash(record, pipe.components.weights_hash())
    call = _call_args(record, image, mask)
    images = []
    for start in range(0, record.num_images, batch_size):
        seeds = [record.seed + i for i in range(start, min(start + batch_size, record.num_images))]
        batch = pipe.generate(dataclasses.replace(call, num_images_per_prompt=len(seeds), generator=seeds))
        _save(batch.images, paths[start : start + len(seeds)], seeds, record, keep_paths)
        images += batch.images
    if len(images) > 1:
        grid = shareable(dataclasses.replace(record, grid=True), keep_paths)
        save_png(make_grid(images), paths[-1], grid)
        print(f"saved {paths[-1]} (grid of {len(images)})")


def _call_args(record: GenerationRecord, image: Any, mask: Any) -> CallArgs:
    """The pipeline call of `record`, without the number of images and their seeds."""
    call = CallArgs(
        prompt=record.prompt,
        negative_prompt=record.negative_prompt or None,
        num_inference_steps=record.steps,
        guidance_scale=record.guidance_scale,
        guidance_rescale=record.guidance_rescale,
        clip_skip=record.clip_skip,
        height=record.height,
        width=record.width,
    )
    if record.task != "txt2img":
        call = dataclasses.replace(call, image=image, strength=record.strength)
    if record.task == "inpaint":
        call = dataclasses.replace(
            call, mask_image=mask, mask_blur=record.mask_blur, paste_back=record.paste_back
        )
    return call


def _check_weights_hash(record: GenerationRecord, weights_hash: str) -> None:
    """Warn when the model differs from the one that made the --from-png image; record the hash."""
    if record.model_hash and record.model_hash != weights_hash:
        warnings.warn(
            f"the model's weights hash {weights_hash} differs from the image's {record.model_hash}",
            stacklevel=2,
        )
    record.model_hash = weights_hash


def _save(
    images: list, paths: list[Path], seeds: list[int], record: GenerationRecord, keep_paths: bool
) -> None:
    """Each image with its own seed in its record (its folder made if missing); one line per file."""
    record.width, record.height = images[0].size
    for img, path, seed in zip(images, paths, seeds):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(img, path, shareable(dataclasses.replace(record, seed=seed, num_images=1), keep_paths))
        print(f"saved {path} (seed {seed})")
