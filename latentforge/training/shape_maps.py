"""An auxiliary loss of the U-Net trainer on the built-in shapes data (`shape_map_weight`): a small head reads
the U-Net's features at one of its layers (`shape_map_layer`) and predicts, for every latent cell, how much of
it each shape class covers in the clean image (background, circle, square, triangle, star), from the scenes'
ground truth. Its cross-entropy is added to the diffusion loss, so the U-Net's features must tell the shapes
apart at every noise level, not only the colours that lower the MSE first: the idea of representation
alignment (Yu et al. 2025, "REPA"), with the scene's own labels as the representation. The head trains with
the U-Net and is checkpointed with it, but is not part of the exported model.

With `shape_map_centers` > 0 the head also predicts where each object's centre lies (one more channel: a
Gaussian heatmap per object, peak 1 at its centre, as CenterNet's, Zhou et al. 2019), trained with a binary
cross-entropy of that weight: the class shares alone do not say how many objects there are, the centres do,
so three scattered circles cost where one circle was asked for.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from latentforge.data.shapes import SHAPES, shape_mask

CLASSES = ("background", *SHAPES)


@lru_cache(maxsize=4096)
def object_mask(shape: str, width: int, height: int) -> np.ndarray:
    return shape_mask(shape, width, height)


def scene_class_map(scene: dict) -> np.ndarray:
    """(size, size) int64 class index per pixel of a scene (the `scene` column's JSON, parsed): 0 where the
    background shows, 1 + SHAPES.index(shape) where an object covers the pixel (later objects on top)."""
    size = int(scene["size"])
    classes = np.zeros((size, size), dtype=np.int64)
    for obj in scene["objects"]:
        x0, y0, x1, y1 = obj["box"]
        covered = object_mask(obj["shape"], x1 - x0, y1 - y0)
        classes[y0:y1, x0:x1][covered] = 1 + SHAPES.index(obj["shape"])
    return classes


def cell_fractions(scenes: list[str], cells: tuple[int, int]) -> torch.Tensor:
    """(N, len(CLASSES), h, w) float16: the share of each latent cell covered by each class, for `scenes`
    (JSON strings of the shapes dataset's `scene` column); `cells` = (h, w) of the latents."""
    maps = torch.from_numpy(np.stack([scene_class_map(json.loads(text)) for text in scenes]))
    one_hot = F.one_hot(maps, len(CLASSES)).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, cells).half()


def cell_centers(scenes: list[str], cells: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w) float16 for `scenes` (JSON strings of the `scene` column): each object's Gaussian at its
    box centre (sigma a sixth of its mean side, at least half a cell), peak 1, the maximum where objects meet,
    read at the centres of the latent cells `cells` = (h, w)."""
    h, w = cells
    heat = torch.zeros(len(scenes), 1, h, w)
    for i, text in enumerate(scenes):
        scene = json.loads(text)
        size = int(scene["size"])
        ys = ((torch.arange(h) + 0.5) * size / h)[:, None]
        xs = ((torch.arange(w) + 0.5) * size / w)[None, :]
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["box"]
            sigma = max((x1 - x0 + y1 - y0) / 12, 0.5 * size / min(h, w))
            distance2 = (ys - (y0 + y1) / 2) ** 2 + (xs - (x0 + x1) / 2) ** 2
            heat[i, 0] = torch.maximum(heat[i, 0], torch.exp(-distance2 / (2 * sigma**2)))
    return heat.half()


def shape_targets(scenes: list[str], cells: tuple[int, int], centers: bool) -> torch.Tensor:
    """The head's targets: `cell_fractions`, and with `centers` the `cell_centers` heatmap as one more
    channel."""
    shares = cell_fractions(scenes, cells)
    return torch.cat([shares, cell_centers(scenes, cells)], dim=1) if centers else shares


def check_scenes(dataset) -> None:
    """ValueError unless `dataset` carries the shapes dataset's ground truth (its `scene` column)."""
    if "scene" not in dataset.column_names:
        raise ValueError(
            "shape_map_weight > 0 needs each image's scene (its shapes and boxes): train on the built-in shapes "
            f"data (data.dataset=shapes), whose `scene` column gives them; this dataset has {dataset.column_names}"
            ", so set shape_map_weight=0"
        )


class ShapeMapHead(torch.nn.Module):
    """Features (B, C, h', w') -> class logits (B, len(CLASSES), h, w): a two-layer 1x1-convolution MLP (as
    REPA's projector) at the features' resolution, then resized to the latents' cells."""

    def __init__(self, channels: int, hidden: int = 128, outputs: int = len(CLASSES)) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, hidden, 1),
            torch.nn.SiLU(),
            torch.nn.Conv2d(hidden, outputs, 1),
        )

    def forward(self, features: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
        logits = self.net(features)
        if tuple(logits.shape[-2:]) != tuple(cells):
            logits = F.interpolate(logits, size=cells, mode="bilinear", align_corners=False)
        return logits


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (B, K, h, w) against class shares `targets` (same shape, summing to 1 over K),
    averaged over cells and samples: scalar."""
    return -(targets.float() * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def _as_tensor(output) -> torch.Tensor:
    """A module's output as one feature tensor: diffusers' blocks return a tensor, a tuple (first item) or an
    output object (`.sample`)."""
    if isinstance(output, tuple):
        output = output[0]
    return getattr(output, "sample", output)


class ShapeMapLoss:
    """The loss's state in one run: the targets of every latent-cache row (`shape_targets`), the head, and a
    forward hook on the U-Net's `layer` that keeps its last output. Call `loss(rows)` after each U-Net
    forward. `centers_weight` > 0: the targets' last channel is the centre heatmap, which the head also
    predicts."""

    def __init__(
        self, unet: torch.nn.Module, layer: str, targets: torch.Tensor, centers_weight: float = 0.0
    ) -> None:
        modules = dict(unet.named_modules())
        if not layer or layer not in modules:
            blocks = [n for n in modules if n.count(".") <= 2 and "blocks" in n]
            raise ValueError(
                f"shape_map_layer={layer!r} is not a layer of this U-Net; for example {blocks[:8]}"
            )
        outputs = len(CLASSES) + (1 if centers_weight else 0)
        if targets.shape[1] != outputs:
            raise ValueError(
                f"shape map targets have {targets.shape[1]} channels, the head predicts {outputs}"
            )
        self.targets, self.centers_weight = targets, centers_weight
        self._features: torch.Tensor | None = None
        modules[layer].register_forward_hook(self._keep)
        self.head = ShapeMapHead(self._channels(unet), outputs=outputs)

    def _keep(self, module, inputs, output) -> None:
        self._features = _as_tensor(output)

    def _channels(self, unet) -> int:
        """The layer's channel count, from one forward of the U-Net on a zero input."""
        config, param = unet.config, next(unet.parameters())
        size = config.sample_size if isinstance(config.sample_size, int) else config.sample_size[0]
        sample = torch.zeros(1, config.in_channels, size, size, device=param.device, dtype=param.dtype)
        text = torch.zeros(1, 1, config.cross_attention_dim, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            unet(sample, torch.zeros(1, dtype=torch.long, device=param.device), text)
        channels, self._features = self._features.shape[1], None
        return channels

    def loss(self, rows: torch.Tensor, head: torch.nn.Module | None = None) -> torch.Tensor:
        """Soft cross-entropy of the head's prediction from the last forward's features against the targets
        of cache rows `rows` (B,); `head`: the head as the accelerator prepared it (default: `self.head`)."""
        if self._features is None:
            raise RuntimeError("shape map loss: the U-Net has not run since the last loss")
        features, self._features = self._features, None
        targets = self.targets[rows.to(self.targets.device)].to(features.device)
        logits = (head or self.head)(features, tuple(targets.shape[-2:]))
        k = len(CLASSES)
        loss = soft_cross_entropy(logits[:, :k], targets[:, :k])
        if self.centers_weight:
            centers = F.binary_cross_entropy_with_logits(logits[:, k:].float(), targets[:, k:].float())
            loss = loss + self.centers_weight * centers
        return loss
