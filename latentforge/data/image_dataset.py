"""Torch view of an image/caption `datasets.Dataset` that skips unreadable images instead of failing."""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from latentforge.data.sources import check_columns
from latentforge.data.transforms import ImageCaptionTransform
from latentforge.imaging import normalized

if TYPE_CHECKING:
    import datasets

# what PIL raises on truncated, garbled or unsupported files (UnidentifiedImageError is an OSError)
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


logger = logging.getLogger(__name__)
LOGGED_UNREADABLE = 5  # unreadable images named in the log, per process (the count covers them all)


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """An image that could not be read: its dataset row, its file (or row) name and why."""

    index: int
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def _name_of(value: Any, index: int) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    return str(path) if path else f"row {index}"


def _file_of(value: Any) -> Any:
    if isinstance(value, dict):
        return io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    return value


def open_image(value: Any) -> Image.Image:
    """RGB image from a `datasets` image value (dict of bytes/path, path, or PIL); raises OSError if unreadable."""
    image = value if isinstance(value, Image.Image) else Image.open(_file_of(value))
    image.load()  # decode now, so a truncated file fails here and not inside the transform
    return normalized(image)  # EXIF rotation, transparency over white, 16-bit scaled


def image_size(value: Any) -> tuple[int, int] | None:
    """(width, height) of a `datasets` image value from its header alone; None when it cannot be read."""
    try:
        if isinstance(value, Image.Image):
            return value.size
        with Image.open(_file_of(value)) as image:
            return image.size
    except _IMAGE_ERRORS:
        return None


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Item i -> {"pixel_values": (3, H, W) float in [-1, 1], "text": str, "index": i, "original_size": (h, w),
    "crop_top_left": (top, left)}, or an `Unreadable` (logged, the first few) if the image cannot be read.

    Randomness (crop, flip, choice among several captions) comes from a generator seeded by
    (seed, epoch, index), so any worker layout and any resume point give the same samples. `skipped`
    counts None results in this process; with DataLoader workers use the batch's "skipped" from
    `collate_skip_none` instead. `target_sizes[i]` = (height, width) per item, e.g. from aspect-ratio buckets.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        transform: ImageCaptionTransform,
        image_column: str = "image",
        caption_column: str = "text",
        seed: int = 0,
        target_sizes: list[tuple[int, int]] | None = None,
    ) -> None:
        import datasets

        check_columns(hf_dataset, image_column, caption_column, "hf_dataset")
        if target_sizes is not None and len(target_sizes) != len(hf_dataset):
            raise ValueError(f"target_sizes has {len(target_sizes)} entries for {len(hf_dataset)} items")
        if isinstance(hf_dataset.features[image_column], datasets.Image):
            # decode here, not in `datasets`, so a corrupt file is caught and skipped
            hf_dataset = hf_dataset.cast_column(image_column, datasets.Image(decode=False))
        self.data, self.transform = hf_dataset, transform
        self.image_column, self.caption_column = image_column, caption_column
        self.seed, self.epoch, self.target_sizes, self.skipped = seed, 0, target_sizes, 0

    def __len__(self) -> int:
        return len(self.data)

    def set_epoch(self, epoch: int) -> None:
        """Use the random crops/flips of `epoch` (call before creating the epoch's iterator)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any] | Unreadable:
        row = self.data[int(index)]
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        try:
            image = open_image(row[self.image_column])
        except _IMAGE_ERRORS as err:
            self.skipped += 1
            unreadable = Unreadable(int(index), _name_of(row[self.image_column], int(index)), _reason(err))
            if self.skipped <= LOGGED_UNREADABLE:
                logger.warning("data: skipping unreadable image %s", unreadable)
            return unreadable
        caption = row[self.caption_column]
        if isinstance(caption, list | tuple):  # several captions per image: pick one
            caption = caption[int(rng.integers(len(caption)))] if caption else ""
        size = self.target_sizes[int(index)] if self.target_sizes is not None else None
        sample = self.transform.apply(image, "" if caption is None else str(caption), rng, size)
        return {
            "pixel_values": sample.pixels,
            "text": sample.caption,
            "index": int(index),
            "original_size": (image.height, image.width),
            "crop_top_left": sample.crop_top_left,
        }


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def collate_skip_none(items: list[dict[str, Any] | Unreadable | None]) -> dict[str, Any]:
    """Stack the readable items; "skipped" = how many were not (None or `Unreadable`), "unreadable" = the
    `Unreadable` ones. pixel_values: (B, 3, H, W), B may be 0; original_size and crop_top_left: (B, 2) as
    (height, width) and (top, left)."""
    kept = [item for item in items if isinstance(item, dict)]
    pixel_values = torch.stack([i["pixel_values"] for i in kept]) if kept else torch.empty(0, 3, 0, 0)
    return {
        "pixel_values": pixel_values,
        "text": [i["text"] for i in kept],
        "index": torch.tensor([i["index"] for i in kept], dtype=torch.long),
        "original_size": torch.tensor([i["original_size"] for i in kept], dtype=torch.long).reshape(-1, 2),
        "crop_top_left": torch.tensor([i["crop_top_left"] for i in kept], dtype=torch.long).reshape(-1, 2),
        "skipped": len(items) - len(kept),
        "unreadable": [item for item in items if isinstance(item, Unreadable)],
    }
