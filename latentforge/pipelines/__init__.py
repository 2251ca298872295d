"""Text-to-image, image-to-image and inpainting pipelines over one denoising core (see `denoising.py`).

Their call keywords are `call_args.CallArgs`. The classes are imported lazily, so light submodules
(`schedulers`, `sampling_defaults`) can be used, e.g. by the CLI's argument parser, without importing torch
and diffusers.
"""

from __future__ import annotations

from latentforge._lazy import lazy_exports

_EXPORTS = {
    "TextToImagePipeline": "latentforge.pipelines.pipeline",
    "ImageToImagePipeline": "latentforge.pipelines.pipeline",
    "InpaintPipeline": "latentforge.pipelines.pipeline",
    "PipelineOutput": "latentforge.pipelines.pipeline",
    "CallArgs": "latentforge.pipelines.call_args",
    "encode_prompt": "latentforge.pipelines.prompts",
    "SCHEDULER_NAMES": "latentforge.pipelines.schedulers",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
