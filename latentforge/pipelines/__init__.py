"""Text-to-image, image-to-image and inpainting pipelines over one denoising core (see `core.py`).

The classes are imported lazily, so light submodules (`schedulers`, `metadata`) can be used, e.g. by the
CLI's argument parser, without importing torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TextToImagePipeline": "latentforge.pipelines.pipeline",
    "ImageToImagePipeline": "latentforge.pipelines.pipeline",
    "InpaintPipeline": "latentforge.pipelines.pipeline",
    "PipelineOutput": "latentforge.pipelines.pipeline",
    "encode_prompt": "latentforge.pipelines.prompts",
    "SCHEDULER_NAMES": "latentforge.pipelines.schedulers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'latentforge.pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
