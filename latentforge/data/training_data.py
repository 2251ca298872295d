"""Training data from a `DataConfig`: load any image/caption source, split off held-out pairs, and wrap
it in a seeded DataLoader whose order and augmentations are functions of (seed, epoch, index)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from latentforge.data.image_dataset import ImageCaptionDataset, collate_skip_none
from latentforge.data.shapes import HELD_OUT_PAIRS
from latentforge.data.sources import load_image_text_dataset
from latentforge.data.transforms import ImageCaptionTransform

if TYPE_CHECKING:
    import datasets

BUILTIN = ("shapes", "emoji")


@dataclass
class DataConfig:
    """Where the image/caption pairs come from and how images are prepared."""

    dataset: str = (
        "shapes"  # "shapes"/"emoji" (built-in), image folder, save_to_disk folder, hub id; join with "+"
    )
    num_samples: int = 10000  # samples generated for a built-in dataset (ignored otherwise)
    image_column: str = "image"  # column holding the images
    caption_column: str = "text"  # column holding the captions (a list per row: one is picked per epoch)
    split: str = "train"  # split of a folder/hub dataset to read
    resolution: int = 64  # training images are resized and cropped to resolution x resolution
    center_crop: bool = True  # centre crop (else a random crop per epoch)
    random_flip: bool = False  # random horizontal flip; 'left'/'right' in captions are swapped to stay true
    held_out_fraction: float = 0.02  # fraction of pairs held out for evaluation (never trained on)
    max_held_out: int = 512  # cap on the held-out pairs
    seed: int = 0  # seeds the built-in generator, the held-out split and per-sample augmentation
    num_workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    max_corrupt_fraction: float = 0.2  # stop when more than this fraction of images is unreadable


def _load_one(source: str, config: DataConfig) -> datasets.Dataset:
    builtin = source.partition(":")[0] in BUILTIN and ":" not in source
    params = (
        {"num_samples": config.num_samples, "seed": config.seed, "size": config.resolution}
        if builtin
        else None
    )
    data = load_image_text_dataset(
        source, config.image_column, config.caption_column, config.split, params=params
    )
    return data.select_columns([config.image_column, config.caption_column])


def load_splits(config: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, held_out) `datasets.Dataset`s of `config`; the split is a function of `config.seed`.

    `dataset` may join sources with "+" ("shapes + emoji"): each built-in one gives num_samples pairs."""
    import datasets

    if not 0 <= config.held_out_fraction < 1:
        raise ValueError(f"data.held_out_fraction must be in [0, 1), got {config.held_out_fraction}")
    parts = [_load_one(source.strip(), config) for source in config.dataset.split("+")]
    data = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    n_held = min(config.max_held_out, round(len(data) * config.held_out_fraction))
    if config.held_out_fraction > 0:
        n_held = max(n_held, 1)
    if n_held >= len(data):
        raise ValueError(f"data: {len(data)} samples leave nothing to train on after holding out {n_held}")
    if n_held == 0:
        return data, data.select([])
    split = data.train_test_split(test_size=n_held, seed=config.seed, shuffle=True)
    return split["train"], split["test"]


def image_loader(
    hf_dataset: datasets.Dataset, config: DataConfig, batch_size: int, shuffle: bool, flip: bool | None = None
) -> torch.utils.data.DataLoader:
    """DataLoader of {"pixel_values": (B, 3, R, R) in [-1, 1], "text", "index", "skipped"} batches.

    Unreadable images are dropped from their batch and counted in "skipped". Training loaders (shuffle=True)
    drop the last partial batch; accelerate swaps the shuffle for a sampler seeded by (seed, epoch).
    flip: override `config.random_flip` (evaluation loaders never flip).
    """
    transform = ImageCaptionTransform(
        config.resolution, config.center_crop, config.random_flip if flip is None else flip
    )
    dataset = ImageCaptionDataset(
        hf_dataset, transform, config.image_column, config.caption_column, seed=config.seed
    )
    if batch_size < 1:
        raise ValueError(f"optim.batch_size must be >= 1, got {batch_size}")
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=config.num_workers,
        collate_fn=collate_skip_none,
        # its own generator: making an iterator must not draw from the global RNG (resume replays that)
        generator=torch.Generator().manual_seed(config.seed),
    )


def data_note(config: DataConfig, num_train: int) -> str:
    """One paragraph for a model card: source, size, resolution and augmentation."""
    notes = []
    for source in (s.strip() for s in config.dataset.split("+")):
        if source in BUILTIN:
            note = f"built-in `{source}` (num_samples={config.num_samples}, seed={config.seed})"
            if source == "shapes":
                pairs = ", ".join(f"{c} {s}" for c, s in sorted(HELD_OUT_PAIRS))
                note += f"; colour-shape pairs never drawn in training: {pairs}"
        else:
            note = f"`{source}` (split {config.split}, columns {config.image_column}/{config.caption_column})"
        notes.append(note)
    source = " + ".join(notes)
    return (
        f"Source: {source}. {num_train} training pairs after holding out "
        f"{config.held_out_fraction:.1%} (max {config.max_held_out}) for evaluation. "
        f"Resolution {config.resolution}, center_crop={config.center_crop}, random_flip={config.random_flip} "
        "(flips swap 'left'/'right' in captions)."
    )
