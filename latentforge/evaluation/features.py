"""Feature spaces for FID/KID and retrieval, and the CLIP used for CLIP score. Every extractor has a
`name` that reports print beside each number, because a FID is only comparable within one space.

- "inception": torchvision's Inception-v3 pool features (2048-d), only when its weights are already in
  the local torch hub cache (never downloaded). These are torchvision's ImageNet weights, not the
  TensorFlow FID Inception, so the numbers are close to, not equal to, published FIDs.
- "clip": the image tower of an open_clip model, e.g. the CLIP our trainer saved with open_clip's own
  folder format (`open_clip_config.json` + `open_clip_model.safetensors`, loaded as `local-dir:`).
- "pixels": the image resized to 16x16, flattened (768-d): a weak but always available space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from latentforge.models.tokenizer import build_clip_tokenizer

FEATURE_SPACES = ("auto", "inception", "clip", "pixels")
INCEPTION_WEIGHTS = "inception_v3_google-*.pth"  # torchvision's file name in <torch hub>/checkpoints
LPIPS_BACKBONE_WEIGHTS = "alexnet-owt-*.pth"


def _hub_file(pattern: str) -> Path | None:
    matches = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(pattern))
    return matches[-1] if matches else None


class PixelFeatures:
    """Images resized (box filter) to `size` x `size`, flattened to (N, 3 * size^2) in [0, 1]."""

    def __init__(self, size: int = 16):
        self.size = size
        self.name = f"pixels {size}x{size}"

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        arrays = [
            np.asarray(im.convert("RGB").resize((self.size, self.size), Image.Resampling.BOX))
            for im in images
        ]
        return np.stack(arrays).reshape(len(arrays), -1).astype(np.float64) / 255


class ClipEncoder:
    """An open_clip model with its evaluation preprocessing and our offline tokenizer (same ids as open_clip)."""

    def __init__(self, model: torch.nn.Module, name: str = "open_clip", preprocess=None, device: str = "cpu"):
        import open_clip

        self.model = model.eval().to(device)
        self.device = device
        self.name = f"open_clip image tower ({name})"
        self.preprocess = preprocess or open_clip.image_transform(model.visual.image_size, is_train=False)
        # '!' (id 0) pads, as open_clip's tokenizer pads with zeros
        self.tokenizer = build_clip_tokenizer("!", model_max_length=model.context_length)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> ClipEncoder:
        """Load an open_clip folder (`open_clip_config.json` + `open_clip_model.safetensors`), or the CLIP
        trainer's model folder that holds one as `open_clip/`."""
        import open_clip

        given = path = Path(path)
        if not (path / "open_clip_config.json").is_file() and (path / "open_clip").is_dir():
            path = path / "open_clip"  # the CLIP trainer's model folder: <output_dir>/model/open_clip
        if not (path / "open_clip_config.json").is_file():
            raise FileNotFoundError(
                f"clip: {path / 'open_clip_config.json'} not found; give the CLIP trainer's model folder "
                "(with open_clip/) or a folder with open_clip_config.json + open_clip_model.safetensors"
            )
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
        return cls(model, name=str(given), preprocess=preprocess, device=device)

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """L2-normalised image embeddings (N, D), float32 on CPU."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack(
                [self.preprocess(im.convert("RGB")) for im in images[start : start + batch_size]]
            )
            out.append(self.model.encode_image(batch.to(self.device), normalize=True).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings (N, D), float32 on CPU."""
        out = []
        for start in range(0, len(texts), batch_size):
            ids = self.tokenizer(
                list(texts[start : start + batch_size]),
                padding="max_length",
                truncation=True,
                return_tensors="pt",
            ).input_ids
            out.append(self.model.encode_text(ids.to(self.device), normalize=True).float().cpu())
        return torch.cat(out)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_images(images).double().numpy()


class InceptionFeatures:
    """torchvision Inception-v3 pool features (N, 2048) from weights already in the torch hub cache."""

    def __init__(self, weights: Path, device: str = "cpu"):
        from torchvision.models import inception_v3

        model = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        # torchvision ships these weights only as a .pth; weights_only=True refuses anything but tensors
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.fc = torch.nn.Identity()
        self.model = model.eval().to(device)
        self.device = device
        self.name = f"inception-v3 pool (torchvision {weights.name})"

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        out = []
        for start in range(0, len(images), batch_size):
            batch = [
                torch.from_numpy(
                    np.asarray(im.convert("RGB").resize((299, 299), Image.Resampling.BILINEAR)).copy()
                )
                for im in images[start : start + batch_size]
            ]
            x = (torch.stack(batch).permute(0, 3, 1, 2).float() / 255 - mean) / std
            out.append(self.model(x.to(self.device)).double().cpu())
        return torch.cat(out).numpy()


def feature_extractor(
    space: str = "auto", clip: ClipEncoder | str | os.PathLike | None = None, device: str = "cpu"
):
    """A callable images -> (N, D) features with a `.name`: "auto" picks Inception (if its weights are in
    the local hub cache), else the CLIP image tower (if `clip` is given), else pixels."""
    if space not in FEATURE_SPACES:
        raise ValueError(f"feature space must be one of {FEATURE_SPACES}, got {space!r}")
    weights = _hub_file(INCEPTION_WEIGHTS)
    if space == "inception" and weights is None:
        raise FileNotFoundError(
            f"feature space 'inception': no {INCEPTION_WEIGHTS} in {Path(torch.hub.get_dir()) / 'checkpoints'} "
            "(weights are never downloaded); use 'clip' with a CLIP folder or 'pixels'"
        )
    if space == "clip" and clip is None:
        raise ValueError("feature space 'clip' needs a CLIP (--clip FOLDER)")
    if space == "inception" or (space == "auto" and weights is not None):
        return InceptionFeatures(weights, device)
    if space == "clip" or (space == "auto" and clip is not None):
        return clip if isinstance(clip, ClipEncoder) else ClipEncoder.from_pretrained(clip, device)
    return PixelFeatures()


def extract_features(extractor, images: Sequence[Image.Image], batch_size: int = 64, desc: str = "features"):
    """Features (N, D) of many images in batches, with a progress bar."""
    chunks = [
        extractor(images[start : start + batch_size])
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=len(images) <= batch_size)
    ]
    return np.concatenate(chunks)


def lpips_metric(device: str = "cpu"):
    """The LPIPS (AlexNet) metric when the `lpips` package and its backbone weights are local, else None."""
    try:
        import lpips
    except ImportError:
        return None
    if _hub_file(LPIPS_BACKBONE_WEIGHTS) is None:
        return None
    return lpips.LPIPS(net="alex", verbose=False).eval().to(device)
