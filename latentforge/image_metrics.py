"""Per-image reconstruction metrics, PSNR and SSIM: used by the VAE trainer's held-out check and by
`latentforge eval vae`, so they live below both."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_pair(images: torch.Tensor, references: torch.Tensor) -> None:
    if images.shape != references.shape or images.ndim != 4:
        raise ValueError(
            "images and references must both be (B, C, H, W) of the same shape, "
            f"got {tuple(images.shape)} and {tuple(references.shape)}"
        )


def psnr(images: torch.Tensor, references: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,); inputs (B, C, H, W) in [0, data_range]."""
    _check_pair(images, references)
    mse = (images.double() - references.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)  # inf for identical images


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size, size), float64."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    images: torch.Tensor,
    references: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean SSIM per image, (B,); inputs (B, C, H, W) in [0, data_range], H and W >= window_size.

    Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error visibility to structural
    similarity", Eq. 13 with their settings: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
    local statistics over 'valid' windows only (as their reference MATLAB code), averaged over channels.
    """
    _check_pair(images, references)
    if min(images.shape[-2:]) < window_size:
        raise ValueError(
            f"images must be at least {window_size} px per side for SSIM, got {tuple(images.shape)}"
        )
    channels = images.shape[1]
    window = gaussian_window(window_size, sigma).to(images.device)[None, None].repeat(channels, 1, 1, 1)
    x, y = images.double(), references.double()

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)
