"""The U-Net trainer's inputs when the data is streamed (data.shards): no latent cache can hold such a set, so
the frozen VAE and text encoder encode each batch as it is drawn, on the training device."""

from __future__ import annotations

import torch

from latentforge.models.components import Components
from latentforge.models.tokenizer import tokenize


def stream_inputs(
    components: Components, batch: dict, scaling: float, caption_dropout: float, text_encoder=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents (B, C, h, w) sampled from the VAE posterior of batch["pixel_values"] (B, 3, H, W) in [-1, 1],
    caption embeddings (B, L, D) with `caption_dropout` of the captions replaced by "" (the same draws as the
    cached path: one uniform per sample), and the pixels on the device. The embeddings come from
    `text_encoder` with gradients when it trains, else from the frozen one."""
    vae, device = components.vae, components.vae.device
    pixels = batch["pixel_values"].to(device)
    dropped = torch.rand(len(batch["text"])) < caption_dropout
    texts = ["" if drop else text for drop, text in zip(dropped.tolist(), batch["text"])]
    ids = tokenize(components.tokenizer, texts).to(device)
    with torch.no_grad():
        posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
        latents = (posterior.mean + posterior.std * torch.randn_like(posterior.mean)).float() * scaling
        if text_encoder is None:
            embeds = components.text_encoder(ids)[0].float()
    if text_encoder is not None:
        embeds = text_encoder(ids)[0]
    return latents, embeds, pixels
