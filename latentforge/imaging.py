"""Pixels between PIL and torch, and image grids: the one home of these conversions for pipelines, training
and evaluation. Tensors here are (B, 3, H, W) in [0, 1]; PIL images are RGB."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image

if TYPE_CHECKING:  # torch is imported where a tensor is made: the CLI's parser imports this module
    import torch


def to_pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """PIL images from (B, 3, H, W) in [0, 1], rounded to 8 bits as diffusers does."""
    array = (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype("uint8")
    return [PIL.Image.fromarray(a) for a in array]


def pil_to_tensor(images: Sequence[PIL.Image.Image]) -> torch.Tensor:
    """(B, 3, H, W) float32 in [0, 1] from PIL images of one size (converted to RGB)."""
    import torch

    arrays = np.stack([np.asarray(im.convert("RGB")) for im in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255


def make_grid(
    images: Sequence[PIL.Image.Image], columns: int | None = None, fill: str = "black"
) -> PIL.Image.Image:
    """One image with `images` (equal sizes) in rows of `columns` (default: about a square); empty cells `fill`."""
    if not images:
        raise ValueError("make_grid: images is empty")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = PIL.Image.new("RGB", (columns * width, rows * height), fill)
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid
