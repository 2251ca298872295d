"""Datasets and transforms for training: built-in synthetic `shapes` and `emoji`, and any image/caption source.

Names are imported lazily so `import latentforge.data` pulls in neither `datasets` nor `torch`.
"""

from __future__ import annotations

from latentforge._lazy import lazy_exports

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
    "ImageCaptionDataset": "latentforge.data.image_dataset",
    "collate_skip_none": "latentforge.data.image_dataset",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
