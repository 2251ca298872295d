"""Datasets and transforms for training: built-in synthetic `shapes` and `emoji`, and any image/caption source.

Names are imported lazily so `import latentforge.data` pulls in neither `datasets` nor `torch`.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "COLORS": "latentforge.data.shapes",
    "SHAPES": "latentforge.data.shapes",
    "HELD_OUT_PAIRS": "latentforge.data.shapes",
    "Scene": "latentforge.data.shapes",
    "ShapeObject": "latentforge.data.shapes",
    "PromptSpec": "latentforge.data.shapes",
    "render_scene": "latentforge.data.shapes",
    "sample_scene": "latentforge.data.shapes",
    "caption_scene": "latentforge.data.shapes",
    "parse_prompt": "latentforge.data.shapes",
    "scene_for_prompt": "latentforge.data.shapes",
    "shapes_dataset": "latentforge.data.shapes",
    "emoji_dataset": "latentforge.data.emoji",
    "load_image_text_dataset": "latentforge.data.sources",
    "ImageCaptionTransform": "latentforge.data.transforms",
    "swap_left_right": "latentforge.data.transforms",
    "AspectRatioBuckets": "latentforge.data.buckets",
    "BucketBatchSampler": "latentforge.data.buckets",
    "ImageCaptionDataset": "latentforge.data.loader",
    "collate_skip_none": "latentforge.data.loader",
    "image_sizes": "latentforge.data.loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'latentforge.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
