"""Image/caption transforms: resize, centre or random crop, and a horizontal flip that keeps captions true."""

from __future__ import annotations

import random
import re
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

Rng = random.Random | np.random.Generator | torch.Generator
FLIP_MODES = ("swap", "skip")
_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def _uniform(rng: Rng) -> float:
    """One float in [0, 1) from any of the supported generators."""
    if isinstance(rng, torch.Generator):
        return float(torch.rand((), generator=rng))
    if isinstance(rng, random.Random | np.random.Generator):
        return float(rng.random())
    raise ValueError(
        f"rng must be random.Random, numpy Generator or torch.Generator, got {type(rng).__name__}"
    )


def swap_left_right(caption: str) -> str:
    """'left' <-> 'right' as whole words, keeping case ('Left' -> 'Right', 'LEFT' -> 'RIGHT'); 'leftover' stays."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, caption)


def mentions_left_right(caption: str) -> bool:
    """True when the caption has 'left' or 'right' as a word."""
    return _LEFT_RIGHT.search(caption) is not None


class ImageCaptionTransform:
    """PIL image + caption -> ((3, H, W) float tensor in [-1, 1], caption), as in diffusers' train_text_to_image.

    The image is resized (LANCZOS) so it covers the target, then centre- or randomly cropped; a random
    horizontal flip (p=0.5) swaps 'left'/'right' in the caption (flip_mode='swap') or is not done when the
    caption names a side (flip_mode='skip'). All randomness comes from the `rng` passed in, so a run can be
    reproduced and resumed.
    """

    def __init__(
        self, resolution: int, center_crop: bool = True, random_flip: bool = False, flip_mode: str = "swap"
    ) -> None:
        if resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {resolution}")
        if flip_mode not in FLIP_MODES:
            raise ValueError(f"flip_mode must be one of {FLIP_MODES}, got {flip_mode!r}")
        self.resolution, self.center_crop, self.random_flip, self.flip_mode = (
            resolution,
            center_crop,
            random_flip,
            flip_mode,
        )

    def __repr__(self) -> str:  # stable text: caches key on it
        return (
            f"ImageCaptionTransform(resolution={self.resolution}, center_crop={self.center_crop}, "
            f"random_flip={self.random_flip}, flip_mode={self.flip_mode!r})"
        )

    def __call__(
        self, image: Image.Image, caption: str, rng: Rng, size: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, str]:
        """size: (height, width) target (e.g. an aspect-ratio bucket); default resolution x resolution."""
        sample = self.apply(image, caption, rng, size)
        return sample.pixels, sample.caption

    def apply(
        self, image: Image.Image, caption: str, rng: Rng, size: tuple[int, int] | None = None
    ) -> Transformed:
        """As `__call__`, and where the crop began in the resized image (SDXL's crop coordinates)."""
        height, width = size or (self.resolution, self.resolution)
        image = image.convert("RGB")
        scale = max(height / image.height, width / image.width)
        resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(resized, Image.Resampling.LANCZOS)
        if self.center_crop:
            left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
        else:
            left = int(_uniform(rng) * (resized[0] - width + 1))
            top = int(_uniform(rng) * (resized[1] - height + 1))
        image = image.crop((left, top, left + width, top + height))
        if self.random_flip and _uniform(rng) < 0.5:
            if self.flip_mode == "swap":
                image, caption = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), swap_left_right(caption)
            elif not mentions_left_right(caption):
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
        return Transformed(pixels.float() / 127.5 - 1.0, caption, (top, left))


class Transformed(NamedTuple):
    """One transformed sample: pixels (3, H, W) in [-1, 1], its caption, crop (top, left) in resized pixels."""

    pixels: torch.Tensor
    caption: str
    crop_top_left: tuple[int, int]
