"""Input images and masks: loading, validation, conversion to tensors; mask blur and paste-back.

Accepted images: a file path, a PIL image, a list of PIL images, a numpy array (H, W, 3) / (N, H, W, 3)
(uint8, or float in [0, 1]) or a torch tensor (3, H, W) / (N, 3, H, W) in [0, 1]. Masks: the same forms
with one channel ((H, W), (H, W, 1), (1, H, W), (N, 1, H, W)); PIL masks of any mode are converted to
grey. White (1) = repaint, black (0) = keep; grey values are partial.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import PIL.Image
import torch

from latentforge.imaging import load_image, normalized

ImageInput = Any  # str | Path | PIL.Image.Image | list[PIL.Image.Image] | np.ndarray | torch.Tensor


def to_tensor(image: ImageInput, argument: str, channels: int) -> torch.Tensor:
    """(N, channels, H, W) float32 in [0, 1] from any accepted form; ValueError naming `argument` otherwise."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image, argument, "RGB" if channels == 3 else "L")
    if isinstance(image, PIL.Image.Image):
        image = [image]
    if isinstance(image, list) and image and all(isinstance(i, PIL.Image.Image) for i in image):
        mode = "RGB" if channels == 3 else "L"
        sizes = {i.size for i in image}
        if len(sizes) > 1:
            raise ValueError(f"{argument}: the images have different sizes {sorted(sizes)}; give equal sizes")
        image = np.stack([np.asarray(normalized(i, mode)) for i in image])
    if isinstance(image, np.ndarray):
        image = _numpy_to_tensor(image, argument, channels)
    if not isinstance(image, torch.Tensor):
        raise ValueError(
            f"{argument}: expected a file path, PIL image, list of PIL images, numpy array or torch tensor, "
            f"got {type(image).__name__}"
        )
    return _check_tensor(image, argument, channels)


def _numpy_to_tensor(array: np.ndarray, argument: str, channels: int) -> torch.Tensor:
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if channels == 1 and array.ndim == 2:  # (H, W) mask
        array = array[None, ..., None]
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and channels == 3:  # (H, W, C)
        array = array[None]
    if array.ndim == 3 and channels == 1:  # (H, W, 1) one mask or (N, H, W) masks
        if array.shape[-1] in (2, 3, 4):
            raise ValueError(
                f"{argument}: expected a mask (1 channel, white = repaint), got a numpy array of shape "
                f"{array.shape} with {array.shape[-1]} channels; convert masks to grey first"
            )
        array = array[None] if array.shape[-1] == 1 else array[..., None]
    if array.ndim != 4:
        raise ValueError(f"{argument}: numpy array of shape {array.shape} is not (H, W, C) or (N, H, W, C)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(0, 3, 1, 2)


def _check_tensor(image: torch.Tensor, argument: str, channels: int) -> torch.Tensor:
    if image.ndim == 2 and channels == 1:
        image = image[None]
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != channels:
        what = "an RGB image (3 channels)" if channels == 3 else "a mask (1 channel, white = repaint)"
        raise ValueError(
            f"{argument}: expected {what}, got shape {tuple(image.shape)} with "
            f"{image.shape[1] if image.ndim == 4 else '?'} channels"
            + ("; convert masks to grey first, e.g. PIL's .convert('L')" if channels == 1 else "")
        )
    image = image.float()
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1 or not math.isfinite(low + high):
        raise ValueError(f"{argument}: values must be in [0, 1], got [{low:.3g}, {high:.3g}]")
    return image


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, height, width): bicubic antialiased resize when the size differs, else `image` itself."""
    if image.shape[-2:] == (height, width):
        return image
    resized = torch.nn.functional.interpolate(
        image, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )
    return resized.clamp(0, 1)


def check_size(height: int, width: int, factor: int, source: str) -> None:
    """ValueError unless height and width are positive multiples of the VAE scale factor."""
    if height < factor or width < factor or height % factor or width % factor:
        raise ValueError(
            f"height and width must be positive multiples of {factor} (the VAE scale factor of this model); "
            f"got {width}x{height} from {source}"
        )


def blur_mask(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Gaussian blur with sigma `radius` pixels of `mask` (N, 1, H, W) in [0, 1] (A1111's `mask_blur`)."""
    if radius <= 0:
        return mask
    from torchvision.transforms.functional import gaussian_blur

    # 3 sigma on each side; reflect padding needs the kernel to be smaller than twice the image.
    half = min(math.ceil(3 * radius), min(mask.shape[-2:]) - 1)
    if half < 1:
        return mask
    return gaussian_blur(mask, kernel_size=[2 * half + 1, 2 * half + 1], sigma=[radius, radius]).clamp(0, 1)


def paste_back(generated: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`generated` (B, 3, H, W) in [0, 1] with the original pixels restored where `mask` (1 = repaint) < 1."""
    original = original.to(generated.device, generated.dtype)
    mask = mask.to(generated.device, generated.dtype)
    return generated * mask + original * (1 - mask)
