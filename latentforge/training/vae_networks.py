"""Networks the VAE trainer adds around diffusers' `AutoencoderKL`: a PatchGAN discriminator and a module
that returns the posterior with the reconstruction (so one DDP-wrapped forward gives both)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from torch import nn


class PatchDiscriminator(nn.Module):
    """pix2pix `NLayerDiscriminator` (Isola et al. 2017) as used by taming-transformers and LDM: 4x4 convs,
    BatchNorm, LeakyReLU(0.2); images (B, 3, H, W) in [-1, 1] -> patch logits (B, 1, h, w)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"loss.disc_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = channels
        for n in range(1, num_layers + 1):
            stride = 2 if n < num_layers else 1  # the last block keeps the resolution (70x70 PatchGAN)
            out = channels * min(2**n, 8)
            layers += [
                nn.Conv2d(width, out, 4, stride, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, True),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(_pix2pix_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images)


def _pix2pix_init(module: nn.Module) -> None:
    """pix2pix/taming `weights_init`: conv ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), shift 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class AutoencoderWithPosterior(nn.Module):
    """Encode, sample the posterior, decode: images (B, 3, H, W) in [-1, 1] -> (reconstruction, mean, logvar,
    small): `small` is the decoding of the sampled latents downsampled `scale_down` times (bilinear, antialiased;
    the scale-equivariance loss compares it with the image downsampled alike), None when `scale_down` is 1.

    AutoencoderKL.forward returns only the reconstruction; calling `encode`/`decode` on a DDP-wrapped model
    would bypass DDP's gradient hooks, so the trainer wraps this module instead.
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(
        self, images: torch.Tensor, scale_down: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        posterior = self.vae.encode(images).latent_dist
        latents = posterior.sample()
        reconstruction = self.vae.decode(latents).sample
        small = self.vae.decode(downsample(latents, scale_down)).sample if scale_down > 1 else None
        return reconstruction, posterior.mean, posterior.logvar, small


def downsample(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H / factor, W / factor), bilinear with antialiasing (a tent filter as wide as two
    output pixels: no aliasing of the finest patterns into coarse ones)."""
    height, width = tensor.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"cannot downsample {height}x{width} by {factor}: the sides must divide by it")
    return nn.functional.interpolate(
        tensor, size=(height // factor, width // factor), mode="bilinear", antialias=True, align_corners=False
    )
