"""Image files, pixels between PIL and torch, and image grids: the one home of these conversions for pipelines,
training and evaluation. Torch-free until a tensor is made, so the CLI checks input files before torch loads.
Tensors here are (B, 3, H, W) in [0, 1]; PIL images are RGB."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL.Image
import PIL.ImageOps

if TYPE_CHECKING:  # torch is imported where a tensor is made: the CLI's parser imports this module
    import torch


# Where a picture has transparency, the colour it is seen on: white for images (A1111's img2img background),
# black for masks (a transparent part of a mask is not painted: keep).
BACKGROUNDS = {"RGB": (255, 255, 255, 255), "L": (0, 0, 0, 255)}


def normalized(image: PIL.Image.Image, mode: str = "RGB") -> PIL.Image.Image:
    """`image` as `mode` ("RGB" or "L") the way it is seen: EXIF rotation applied, transparency composited
    over BACKGROUNDS[mode], 16-bit and 32-bit grey scaled to 8 bits (PIL's convert clips them), palette and
    CMYK converted."""
    # a broken EXIF block (bad rational, bad UTF-8): the pixels are fine, keep them unrotated
    with contextlib.suppress(ValueError, TypeError, ZeroDivisionError, SyntaxError, OSError, KeyError):
        image = PIL.ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = PIL.Image.fromarray((array.clip(0, top) * (255.0 / top)).round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, BACKGROUNDS.get(mode, BACKGROUNDS["RGB"]))
        image = PIL.Image.alpha_composite(background, rgba)
    return image.convert(mode)


def load_image(path: str | os.PathLike, argument: str = "image", mode: str = "RGB") -> PIL.Image.Image:
    """The image file at `path` as `mode`, as a viewer shows it (`imaging.normalized`: EXIF rotation,
    transparency, 16-bit); FileNotFoundError / ValueError naming `argument`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: file {path} does not exist")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return normalized(image, mode)
    except PIL.Image.DecompressionBombError as err:  # refused from the header, before the pixels are read
        raise ValueError(
            f"{argument}: {path} is too large to open safely ({err}); resize it to a few megapixels first"
        ) from None
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{argument}: {path} is not an image file that PIL can read ({err})") from err


def to_pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """PIL images from (B, 3, H, W) in [0, 1], rounded to 8 bits as diffusers does."""
    array = (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype("uint8")
    return [PIL.Image.fromarray(a) for a in array]


def pil_to_tensor(images: Sequence[PIL.Image.Image]) -> torch.Tensor:
    """(B, 3, H, W) float32 in [0, 1] from PIL images of one size (converted to RGB)."""
    import torch

    arrays = np.stack([np.asarray(normalized(im)) for im in images])
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
