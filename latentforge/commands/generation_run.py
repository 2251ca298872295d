"""The heavy half of `generate`/`img2img`/`inpaint`: load the pipeline, make the images batch by batch and
save each PNG with its record as soon as it is done (the settings were checked before this module loads)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch

from latentforge.commands.adapter_files import LoraUse
from latentforge.commands.generation_settings import LoadPlan
from latentforge.commands.library_output import quiet_library_progress_bars
from latentforge.commands.png_record import GenerationRecord, sampler_name, save_png, shareable
from latentforge.evaluation.sampling import resolve_dtype
from latentforge.imaging import make_grid
from latentforge.models.components import resolve_device
from latentforge.models.lora_files import lora_short_hash
from latentforge.pipelines.call_args import CallArgs
from latentforge.pipelines.image_inputs import load_image
from latentforge.pipelines.pipeline import PIPELINES
from latentforge.pipelines.prompt_loras import extract_lora_tags


def generate_images(
    record: GenerationRecord, paths: list[Path], batch_size: int, keep_paths: bool, plan: LoadPlan
) -> None:
    """Make `record.num_images` images, `batch_size` per forward pass, and save them to `paths` (the grid last)."""
    quiet_library_progress_bars()
    image = load_image(record.image, "--image") if record.image else None
    mask = load_image(record.mask, "--mask", mode="L") if record.mask else None
    record.device = resolve_device(record.device)
    record.dtype = resolve_dtype(record.dtype, record.device)
    pipe = PIPELINES[record.task].from_pretrained(
        record.model, torch_dtype=getattr(torch, record.dtype), **plan.file_options
    )
    record.model_hash = _checked_hash(
        "the model's weights", pipe.components.weights_hash(), record.model_hash
    )
    _add_loras(pipe, plan.loras, record, plan.file_options["allow_pickle"])
    _add_embeddings(pipe, record, plan.file_options["allow_pickle"])
    pipe.to(record.device)
    if record.cache_interval > 1:
        pipe.enable_step_cache(record.cache_interval, record.cache_warmup)
    if record.scheduler:
        pipe.set_scheduler(record.scheduler)
    record.model_scheduler = sampler_name(type(pipe.scheduler).__name__, dict(pipe.scheduler.config))
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
        prompt=extract_lora_tags(record.prompt)[0],  # A1111's <lora:...> tags are not for the text encoder
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


def _add_loras(pipe: Any, loras: list[LoraUse], record: GenerationRecord, allow_pickle: bool) -> None:
    """Load every LoRA (adapter name = its name), then activate them all with their weights in one call."""
    hashes = {}
    for use in loras:
        pipe.load_lora_weights(use.path, adapter_name=_adapter_name(use.name), allow_pickle=allow_pickle)
        hashes[use.name] = _checked_hash(
            f"the LoRA {use.name}'s", lora_short_hash(use.path), record.lora_hashes.get(use.name)
        )
    if loras:
        pipe.set_adapters(
            [_adapter_name(use.name) for use in loras], adapter_weights=[use.weight for use in loras]
        )
    record.lora_hashes = hashes


def _adapter_name(name: str) -> str:
    return name.replace(".", "_")  # peft keeps adapters in a ModuleDict, whose keys cannot hold dots


def _add_embeddings(pipe: Any, record: GenerationRecord, allow_pickle: bool) -> None:
    """Load every --embedding under its file's stem (A1111's token)."""
    hashes = {}
    for file in record.embeddings:
        token = pipe.load_textual_inversion(file, token=Path(file).stem, allow_pickle=allow_pickle)
        hashes[token] = _checked_hash(
            f"the embedding {token}'s",
            lora_short_hash(file, skip_header=False),
            record.embedding_hashes.get(token),
        )
    record.embedding_hashes = hashes


def _checked_hash(what: str, actual: str, recorded: str | None) -> str:
    """`actual`, after a warning when the --from-png image recorded another hash for the same file."""
    if recorded and recorded != actual:
        warnings.warn(f"{what} hash {actual} differs from the image's {recorded}", stacklevel=2)
    return actual


def _save(
    images: list, paths: list[Path], seeds: list[int], record: GenerationRecord, keep_paths: bool
) -> None:
    """Each image with its own seed in its record (its folder made if missing); one line per file."""
    record.width, record.height = images[0].size
    for img, path, seed in zip(images, paths, seeds):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(img, path, shareable(dataclasses.replace(record, seed=seed, num_images=1), keep_paths))
        print(f"saved {path} (seed {seed})")
