"""Training data from a `DataConfig`: load any image/caption source, split off held-out pairs, and wrap
it in a seeded DataLoader whose order and augmentations are functions of (seed, epoch, index)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from latentforge.data.buckets import AspectRatioBuckets
from latentforge.data.data_config import DataConfig, check_max_upscale
from latentforge.data.image_dataset import ImageCaptionDataset, collate_skip_none, image_size
from latentforge.data.shapes import HELD_OUT_PAIRS
from latentforge.data.sources import load_image_text_dataset
from latentforge.data.transforms import ImageCaptionTransform

if TYPE_CHECKING:
    import datasets

BUILTIN = ("shapes", "emoji")


def _load_one(source: str, config: DataConfig, extra: tuple[str, ...] = ()) -> datasets.Dataset:
    builtin = source.partition(":")[0] in BUILTIN and ":" not in source
    params = (
        {"num_samples": config.num_samples, "seed": config.seed, "size": config.resolution}
        if builtin
        else None
    )
    data = load_image_text_dataset(
        source, config.image_column, config.caption_column, config.split, params=params
    )
    keep = [c for c in extra if c in data.column_names]
    return data.select_columns([config.image_column, config.caption_column, *keep])


def load_splits(
    config: DataConfig, extra_columns: tuple[str, ...] = ()
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, held_out) `datasets.Dataset`s of `config`; the split is a function of `config.seed`.

    `dataset` may join sources with "+" ("shapes + emoji"): each built-in one gives num_samples pairs.
    `extra_columns` are kept beside the image and caption where every source has them (the shapes data's
    `scene`, its ground truth)."""
    import datasets

    if config.shards:
        raise ValueError(
            "data.shards is streamed by the U-Net trainer only (train unet); here give data.dataset instead"
        )
    if not 0 <= config.held_out_fraction < 1:
        raise ValueError(f"data.held_out_fraction must be in [0, 1), got {config.held_out_fraction}")
    parts = [_load_one(source.strip(), config, extra_columns) for source in config.dataset.split("+")]
    if len(parts) > 1 and extra_columns:  # a column joins only if every source has it
        common = set.intersection(*(set(part.column_names) for part in parts))
        parts = [part.select_columns([c for c in part.column_names if c in common]) for part in parts]
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


def make_buckets(config: DataConfig, vae_factor: int = 8) -> AspectRatioBuckets:
    """The bucket resolutions of `config` (data.buckets=true); errors name the setting to change."""
    step = config.bucket_reso_steps
    if step < 1 or step % vae_factor:
        raise ValueError(
            f"data.bucket_reso_steps={step} must be a positive multiple of the VAE factor {vae_factor}"
        )
    if config.resolution % step:
        raise ValueError(
            f"data.resolution={config.resolution} is not a multiple of data.bucket_reso_steps={step}; "
            f"set data.bucket_reso_steps to a divisor of it (e.g. {max(vae_factor, config.resolution // 8)})"
        )
    check_max_upscale(config)
    buckets = AspectRatioBuckets(
        config.resolution, step, config.min_bucket_reso or None, config.max_bucket_reso or None
    )
    if len(buckets) == 1:
        raise ValueError(
            f"data.buckets=true: data.resolution={config.resolution} with data.bucket_reso_steps={step} leaves "
            "one square bucket; lower data.bucket_reso_steps (kohya uses 64 at resolution 512)"
        )
    return buckets


def assign_buckets(
    hf_dataset: datasets.Dataset, config: DataConfig, vae_factor: int = 8
) -> tuple[list[tuple[int, int]], list[int]]:
    """(sizes, ids): each bucket's (height, width) and each row's bucket. With data.buckets off, or for an
    image whose header cannot be read (it is skipped later), the square resolution x resolution bucket."""
    square = (config.resolution, config.resolution)
    if not config.buckets:
        return [square], [0] * len(hf_dataset)
    buckets = make_buckets(config, vae_factor)
    images = hf_dataset.cast_column(config.image_column, _undecoded(hf_dataset, config.image_column))
    sizes = [image_size(v) for v in images[config.image_column]]
    chosen = [buckets.fit(*s, config.max_upscale) if s else square[::-1] for s in sizes]
    used = sorted(set(chosen), key=lambda wh: (wh[0] / wh[1], wh[0]))
    index = {wh: i for i, wh in enumerate(used)}
    return [(h, w) for w, h in used], [index[wh] for wh in chosen]


def _undecoded(hf_dataset: datasets.Dataset, column: str):
    """The column's feature without decoding (headers are enough to size an image)."""
    import datasets

    feature = hf_dataset.features[column]
    return datasets.Image(decode=False) if isinstance(feature, datasets.Image) else feature


def image_loader(
    hf_dataset: datasets.Dataset,
    config: DataConfig,
    batch_size: int,
    shuffle: bool,
    flip: bool | None = None,
    target_sizes: list[tuple[int, int]] | None = None,
    batch_sampler=None,
) -> torch.utils.data.DataLoader:
    """DataLoader of {"pixel_values": (B, 3, R, R) in [-1, 1], "text", "index", "skipped"} batches.

    Unreadable images are dropped from their batch and counted in "skipped". Training loaders (shuffle=True)
    drop the last partial batch; accelerate swaps the shuffle for a sampler seeded by (seed, epoch).
    flip: override `config.random_flip` (evaluation loaders never flip). target_sizes: (height, width) per
    row (aspect-ratio buckets), with a `batch_sampler` that keeps each batch to one size.
    """
    transform = ImageCaptionTransform(
        config.resolution, config.center_crop, config.random_flip if flip is None else flip
    )
    dataset = ImageCaptionDataset(
        hf_dataset,
        transform,
        config.image_column,
        config.caption_column,
        seed=config.seed,
        target_sizes=target_sizes,
    )
    if batch_size < 1:
        raise ValueError(f"optim.batch_size must be >= 1, got {batch_size}")
    if batch_sampler is not None:
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, num_workers=config.num_workers, collate_fn=collate_skip_none
        )
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
    held_out = f"after holding out {config.held_out_fraction:.1%} (max {config.max_held_out}) for evaluation"
    if config.shards:
        source, held_out = f"tar shards {', '.join(config.shards)}, streamed", "per epoch (none held out)"
    return (
        f"Source: {source}. {num_train} training pairs {held_out}. "
        f"Resolution {config.resolution}, center_crop={config.center_crop}, random_flip={config.random_flip} "
        "(flips swap 'left'/'right' in captions)."
    )
