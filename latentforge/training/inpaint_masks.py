"""Inpainting U-Nets in training: a text-to-image U-Net widened into one (`widen_to_inpaint`), random masks (a
quarter of them the whole image, as in the SD-inpainting recipe) and the latents of the masked image, made as
the inpainting pipeline makes them (diffusers' `prepare_mask_latents`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentforge.models.components import inpaint_in_channels


def random_masks(
    batch: int, height: int, width: int, full_fraction: float, device: torch.device
) -> torch.Tensor:
    """Masks (B, 1, H, W) in {0, 1}, 1 = repaint: `full_fraction` of them all ones, the others the union of
    1-3 random rectangles with sides of 10-70% of the image (global torch RNG)."""
    if not 0 <= full_fraction <= 1:
        raise ValueError(f"inpaint_full_mask_fraction must be in [0, 1], got {full_fraction}")
    masks = torch.zeros(batch, 1, height, width, device=device)
    full = torch.rand(batch) < full_fraction
    counts = torch.randint(1, 4, (batch,))
    sizes = torch.rand(batch, 3, 2) * 0.6 + 0.1  # (h, w) fractions
    corners = torch.rand(batch, 3, 2)
    for i in range(batch):
        if full[i]:
            masks[i] = 1
            continue
        for j in range(int(counts[i])):
            h, w = max(1, int(sizes[i, j, 0] * height)), max(1, int(sizes[i, j, 1] * width))
            top, left = int(corners[i, j, 0] * (height - h + 1)), int(corners[i, j, 1] * (width - w + 1))
            masks[i, :, top : top + h, left : left + w] = 1
    return masks


def inpaint_conditioning(vae, pixels: torch.Tensor, masks: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """(B, 5, h, w): the mask at latent size (nearest) + the scaled posterior sample of the masked image.

    pixels: (B, 3, H, W) in [-1, 1]; masks: (B, 1, H, W), 1 = repaint; the masked image is
    `pixels * (mask < 0.5)` (0 = grey where it will be repainted), as in diffusers' pipeline.
    """
    masked = pixels * (masks < 0.5)
    with torch.no_grad():
        latents = vae.encode(masked.to(vae.dtype)).latent_dist.sample() * vae.config.scaling_factor
    small = F.interpolate(masks, size=(pixels.shape[-2] // scale_factor, pixels.shape[-1] // scale_factor))
    return torch.cat([small.to(latents.dtype), latents], dim=1)


def widen_to_inpaint(unet) -> None:
    """Make a text-to-image U-Net (C input channels) an inpainting one in place: 2C + 1 input channels (the
    noisy latents, the mask, the masked image's latents), as SD's inpainting model was made from SD 1.2. The
    new input weights of `conv_in` start at zero, so the widened U-Net first predicts exactly what it did."""
    old = unet.conv_in
    channels = old.in_channels
    if channels != unet.config.out_channels:
        raise ValueError(
            f"inpaint_variant=true: the base U-Net has {channels} input channels for {unet.config.out_channels} "
            "latent channels, so it is an inpainting U-Net already; drop inpaint_variant"
        )
    new = torch.nn.Conv2d(
        inpaint_in_channels(channels),
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        device=old.weight.device,
    ).to(old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)
