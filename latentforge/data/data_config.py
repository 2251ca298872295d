"""Where training images and captions come from and how they are prepared (`DataConfig`); free of torch, so
configs are checked before torch loads. The loading itself is in `latentforge.data.training_data`."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # WebDataset-style tar shards (<key>.jpg/.png + <key>.txt/.json), streamed instead of `dataset`: each a file,
    # a folder of .tar files, a glob or a brace range ("laion/{00000..00999}.tar"). The U-Net trainer then
    # encodes every batch as it trains (no latent cache), splits the shards among processes and resumes at the
    # checkpoint's batch. Write shards with `python -m latentforge.data.shards SOURCE OUT`.
    shards: list[str] = field(default_factory=list)
    # Aspect-ratio buckets (kohya's --enable_bucket, NovelAI's bucketing): each image is resized to cover the
    # bucket of about resolution^2 pixels whose shape is nearest its own and centre-cropped by a few pixels
    # at most, instead of cut to a square; every batch holds one bucket. Off: square centre crops.
    buckets: bool = False
    min_bucket_reso: int = 0  # shortest bucket side in pixels (0 = max(resolution / 2, bucket_reso_steps))
    max_bucket_reso: int = 0  # longest bucket side in pixels (0 = 2 * resolution)
    bucket_reso_steps: int = 64  # bucket sides are multiples of this (and of the VAE's factor)
    # Limit on enlarging small photos into their bucket (with buckets=true): a photo that its bucket would
    # enlarge more than max_upscale times goes to a smaller bucket of its shape instead (fewer pixels, sides
    # down to bucket_reso_steps), so it is not blown up into blur. 1 = never enlarge (kohya's
    # --bucket_no_upscale); 0 = no limit.
    max_upscale: float = 0.0


def check_max_upscale(config: DataConfig) -> None:
    """data.max_upscale is 0 (no limit) or >= 1, and set only with buckets (ValueError naming the fix);
    torch-free, so the train command checks it before any model loads."""
    if config.max_upscale != 0 and config.max_upscale < 1:
        raise ValueError(
            f"data.max_upscale must be 0 (no limit) or >= 1 (1 = never enlarge), got {config.max_upscale}"
        )
    if config.max_upscale and not config.buckets:
        raise ValueError("data.max_upscale sends small photos to smaller buckets: it needs data.buckets=true")
