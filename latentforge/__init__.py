"""latentforge: latent text-to-image diffusion on the Hugging Face stack.

The public names are imported lazily, so `import latentforge` stays fast and pulls in neither
training code nor `datasets`/`peft`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Components": "latentforge.models.components",
    "load_tokenizer": "latentforge.models.tokenizer",
    "build_clip_tokenizer": "latentforge.models.tokenizer",
    "TextToImagePipeline": "latentforge.pipelines",
    "ImageToImagePipeline": "latentforge.pipelines",
    "InpaintPipeline": "latentforge.pipelines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'latentforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
