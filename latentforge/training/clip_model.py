"""Pieces of the CLIP trainer: the short-context text pass, open_clip's weight-decay groups, tokenisation."""

from __future__ import annotations

import json

import torch

from latentforge.models.tokenizer import PAD_TOKENS, build_clip_tokenizer
from latentforge.resources import architecture_dir


class ShortTextCLIP(torch.nn.Module):
    """open_clip `CLIP` whose text tower runs only up to the last end-of-text token of the batch.

    With the causal mask, outputs at and before a caption's end token never see later positions, so the
    pooled features (and the loss) equal those of the full 77-token pass; captions of ~20 tokens make the
    text tower ~4x cheaper. forward: images (B, 3, H, W) in [-1, 1], ids (B, 77) -> open_clip's output dict.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Normalised text features (B, embed_dim) from ids (B, L) (end token = highest id, as in CLIP)."""
        from open_clip.transformer import text_global_pool

        m = self.model
        n = int(ids.argmax(dim=-1).max()) + 1
        x = m.token_embedding(ids[:, :n]) + m.positional_embedding[:n]
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:n, :n]))
        x = text_global_pool(x, ids[:, :n], m.text_pool_type)
        x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return torch.nn.functional.normalize(x, dim=-1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "image_features": self.model.encode_image(images, normalize=True),
            "text_features": self.encode_text(ids),
            "logit_scale": self.model.logit_scale.exp(),
        }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's rule: no weight decay on gains, biases, norms and the logit scale."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        skip = param.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def architecture_tokenizer(architecture: str):
    """Our offline CLIP tokenizer with the architecture's padding convention (ids equal open_clip's)."""
    cfg = json.loads((architecture_dir(architecture) / "tokenizer" / "tokenizer_config.json").read_text())
    return build_clip_tokenizer(cfg.get("pad_token", PAD_TOKENS["sd1"]), cfg.get("model_max_length", 77))
