"""Text-to-image, image-to-image and inpainting pipelines over one denoising core (see `core.py`)."""

from latentforge.pipelines.pipeline import (
    ImageToImagePipeline,
    InpaintPipeline,
    PipelineOutput,
    TextToImagePipeline,
)
from latentforge.pipelines.schedulers import SCHEDULER_NAMES

__all__ = [
    "ImageToImagePipeline",
    "InpaintPipeline",
    "PipelineOutput",
    "SCHEDULER_NAMES",
    "TextToImagePipeline",
]
