"""An auxiliary loss of the U-Net trainer on the built-in shapes data (`token_grounding_weight`): the
cross-attention of each object phrase's words (its colour and its shape, "red" and "circles" in "three red
circles") must fall on the cells of the objects that phrase names, the token loss of TokenCompose (Wang et al.
2024, which trains Stable Diffusion with segmentation masks of the caption's nouns): for every supervised
cross-attention layer and word, (1 - share of its attention inside the phrase's cells)^2, averaged. The
attention that binds a colour to its shape and a shape to its place is taught directly, not only through the
diffusion loss. Captions the batch drops for classifier-free guidance are left out.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor

from latentforge.data.shapes import COLORS, SHAPES
from latentforge.training.caption_words import caption_words
from latentforge.training.relation_words import RELATION_WORDS
from latentforge.training.shape_maps import object_mask

GROUPS = 2  # a shapes caption names one or two colour/shape groups


def _phrases(words: list[str]) -> list[tuple[int, str, str]]:
    """(index of the colour word, colour, shape) of each 'COLOR SHAPE' or 'COLOR SHAPEs' in `words`."""
    found = []
    for i, (color, noun) in enumerate(zip(words, words[1:], strict=False)):
        shape = noun[:-1] if noun.endswith("s") and noun[:-1] in SHAPES else noun
        if color in COLORS and shape in SHAPES:
            found.append((i, color, shape))
    return found


def phrase_targets(
    scenes: list[str], captions: list[str], tokenizer, cells: tuple[int, int], relation: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row (a `scene` JSON string and its caption): masks (N, GROUPS, h, w) bool, the latent cells
    `cells` that the objects of each named colour/shape group touch, and tokens (N, GROUPS, L) bool, the
    positions of that phrase's words in the tokenized caption (L = the tokenizer's length; a row naming one
    group leaves the second empty). With `relation`, the relation word of a caption that names one ('left',
    'right', 'above', 'below') counts among the first phrase's words. ValueError if the tokenizer does not
    split captions at spaces."""
    length = tokenizer.model_max_length
    masks = torch.zeros(len(scenes), GROUPS, *cells, dtype=torch.bool)
    tokens = torch.zeros(len(scenes), GROUPS, length, dtype=torch.bool)
    for row, (text, caption) in enumerate(zip(scenes, caption_words(captions, tokenizer), strict=True)):
        words, starts = caption.words, caption.starts
        scene = json.loads(text)
        size = int(scene["size"])
        for group, (i, color, shape) in enumerate(_phrases(words)[:GROUPS]):
            first, last = starts[i], starts[i + 2]
            if last >= length or not caption.has_word_at(i):
                raise ValueError(
                    f"token grounding: cannot find {words[i]!r} in the tokens of the caption "
                    f"{' '.join(words)!r} (the tokenizer must split captions at spaces, and the phrase must fit "
                    "its length)"
                )
            tokens[row, group, first:last] = True
            if relation and group == 0:
                named = [j for j, word in enumerate(words) if word in RELATION_WORDS]
                if len(named) == 1:
                    tokens[row, 0, starts[named[0]] : starts[named[0] + 1]] = True
            pixels = np.zeros((size, size), dtype=np.float32)
            for obj in scene["objects"]:
                if obj["color"] == color and obj["shape"] == shape:
                    x0, y0, x1, y1 = obj["box"]
                    pixels[y0:y1, x0:x1] = np.maximum(
                        pixels[y0:y1, x0:x1], object_mask(shape, x1 - x0, y1 - y0)
                    )
            pooled = F.adaptive_avg_pool2d(torch.from_numpy(pixels)[None], cells)[0]
            masks[row, group] = pooled > 0
    return masks, tokens


class _KeepAttention(AttnProcessor):
    """diffusers' plain attention processor, which also keeps each call's attention probabilities averaged over
    the heads, (B, queries, keys), in `kept` while gradients are on (training, not sampling)."""

    def __init__(self, kept: list[torch.Tensor]) -> None:
        super().__init__()
        self.kept = kept

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        scores = attn.get_attention_scores

        def keep(query, key, mask=None):
            probs = scores(query, key, mask)
            if torch.is_grad_enabled():
                self.kept.append(probs.unflatten(0, (-1, attn.heads)).mean(1))
            return probs

        attn.get_attention_scores = keep
        try:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        finally:
            del attn.get_attention_scores


class TokenGroundingLoss:
    """The loss's state in one run: the targets of every latent-cache row (`phrase_targets`) and the kept
    attention of the U-Net's cross-attention layers under `layers` (comma-separated name prefixes). Call
    `loss(rows, dropped)` after each U-Net forward."""

    def __init__(self, unet: torch.nn.Module, layers: str, masks: torch.Tensor, tokens: torch.Tensor) -> None:
        prefixes = tuple(p.strip() for p in layers.split(",") if p.strip())
        self.modules = [
            module
            for name, module in unet.named_modules()
            if name.endswith("attn2") and prefixes and name.startswith(prefixes)
        ]
        if not self.modules:
            crossing = sorted(
                {".".join(n.split(".")[:2]) for n, _ in unet.named_modules() if n.endswith("attn2")}
            )
            raise ValueError(
                f"token_grounding_layers={layers!r} holds no cross-attention layer of this U-Net; give name "
                f"prefixes such as {crossing}"
            )
        self.masks, self.tokens = masks, tokens
        self._kept: list[torch.Tensor] = []
        for module in self.modules:
            module.set_processor(_KeepAttention(self._kept))

    def loss(self, rows: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """Mean (1 - attention share inside the phrase's cells)^2 over the supervised layers and the words of
        each named phrase of cache rows `rows` (B,), leaving out the rows whose caption was `dropped` (B,)."""
        if len(self._kept) < len(self.modules):
            raise RuntimeError("token grounding: the U-Net has not run since the last loss")
        kept = self._kept[-len(self.modules) :]  # the last forward's (a checkpointed recompute adds more)
        self._kept.clear()
        index = rows.to(self.masks.device)
        masks = self.masks[index].to(kept[0].device)
        words = self.tokens[index].to(kept[0].device) & ~dropped.to(kept[0].device)[:, None, None]
        total = kept[0].new_zeros(())
        for probs in kept:  # (B, h' * w', L)
            scale = math.sqrt(masks[0, 0].numel() / probs.shape[1])
            cells = (round(masks.shape[-2] / scale), round(masks.shape[-1] / scale))
            inside = F.adaptive_max_pool2d(masks.float(), cells).flatten(2)  # (B, GROUPS, h' * w')
            attention = probs.transpose(1, 2)  # (B, L, h' * w')
            share = torch.einsum("blp,bgp->bgl", attention, inside) / attention.sum(-1)[:, None].clamp_min(
                1e-8
            )
            total = total + ((1 - share) ** 2 * words).sum()
        return total / (words.sum() * len(kept)).clamp_min(1)
