"""latentforge: latent text-to-image diffusion on the Hugging Face stack.

The public names are imported lazily, so `import latentforge` stays fast and pulls in neither
training code nor `datasets`/`peft`.
"""

from __future__ import annotations

from latentforge._lazy import lazy_exports

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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
