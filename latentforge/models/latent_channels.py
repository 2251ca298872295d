"""Per-channel standardization of a VAE's latents, folded into its weights so stock diffusers still loads it.

A VAE's `scaling_factor` gives its latents unit variance overall, but not per channel: the shapes-world VAE's
16 channels have standard deviations from 0.26 to 1.77, so the diffusion noise drowns some channels at a
fraction of the nominal noise level. SD3 and FLUX correct this with `shift_factor` and per-channel statistics,
which `StableDiffusionPipeline` does not read; here the affine map z -> (z - mean_c) / std_c is folded into the
1x1 `quant_conv` (encoder side) and its inverse into `post_quant_conv` (decoder side), and `scaling_factor`
becomes 1. Encoding then decoding an image gives the same result as before (up to float rounding); only the
latent space the U-Net sees changes.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


@torch.no_grad()
def latent_channel_stats(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> tuple:
    """(mean, std) per channel, each (C,), of `scaling_factor` x the posterior means of `images` in [-1, 1]."""
    latents = [
        vae.encode(batch.to(vae.device, vae.dtype)).latent_dist.mean.float() * vae.config.scaling_factor
        for batch in images.split(batch_size)
    ]
    latents = torch.cat(latents).transpose(0, 1).flatten(1)
    return latents.mean(1), latents.std(1)


@torch.no_grad()
def standardize_latent_channels(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> dict:
    """Make the scaled latents of `images` zero-mean, unit-variance per channel, in place (scaling_factor
    becomes 1); returns the channel statistics measured before ({"mean": [...], "std": [...]})."""
    if not (vae.config.use_quant_conv and vae.config.use_post_quant_conv):
        raise ValueError(
            "standardize_latent_channels needs a VAE with quant_conv and post_quant_conv (SD's layout) to fold "
            "the per-channel scale into; this one has use_quant_conv/use_post_quant_conv off"
        )
    mean, std = latent_channel_stats(vae, images, batch_size)
    if (std <= 0).any():
        raise ValueError(
            f"latent channels {torch.nonzero(std <= 0).flatten().tolist()} are constant on these images"
        )
    measured = {"mean": mean.tolist(), "std": std.tolist()}
    channels, scale = len(mean), vae.config.scaling_factor
    mean, std = mean.to(vae.dtype), std.to(vae.dtype)
    gain, shift = scale / std, mean / std  # z' = gain * posterior_mean - shift
    quant, post = vae.quant_conv, vae.post_quant_conv
    # quant_conv's output is [mean | logvar] of the posterior: the mean rows get the affine map, the log-variance
    # rows shift by 2 log(gain) (the posterior's std scales with its mean)
    quant.weight[:channels] *= gain.view(-1, 1, 1, 1)
    quant.bias[:channels] = quant.bias[:channels] * gain - shift
    quant.bias[channels:] += 2 * gain.log()
    # post_quant_conv reads z' / 1 and must see the old z / scaling_factor = (std * z' + mean) / scaling_factor
    post.bias += post.weight[:, :, 0, 0] @ (mean / scale)
    post.weight *= (std / scale).view(1, -1, 1, 1)
    vae.register_to_config(scaling_factor=1.0)
    return measured
