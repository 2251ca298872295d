"""Validation images during U-Net training: fixed prompts and seeds through our TextToImagePipeline, saved
as a grid PNG (`validation/step-<step>.png`) and logged to the run's trackers (`report_to`)."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from latentforge.imaging import make_grid
from latentforge.models.components import Components
from latentforge.pipelines import TextToImagePipeline
from latentforge.training.stage_configs import PromptValidationConfig
from latentforge.training.trackers import log_images


@torch.no_grad()
def log_validation_images(
    accelerator: Accelerator,
    components: Components,
    config: PromptValidationConfig,
    size: tuple[int, int],
    out_dir: Path,
    step: int,
) -> Path | None:
    """Generate the validation grid at `size` (height, width) (main process), save `out_dir/step-<step>.png`,
    log it; returns the path."""
    path = None
    if accelerator.is_main_process and config.prompts and not components.is_inpaint:
        pipe = TextToImagePipeline.from_components(components)
        pipe.set_progress_bar_config(disable=True)
        models = (components.unet, components.text_encoder)
        modes = [m.training for m in models]
        for m in models:
            m.eval()
        with torch.random.fork_rng(devices=[]):  # training randomness must not depend on validation
            images = pipe(
                prompt=list(config.prompts),
                num_inference_steps=config.num_inference_steps,
                guidance_scale=config.guidance_scale,
                generator=[
                    torch.Generator().manual_seed(config.seed + i) for i in range(len(config.prompts))
                ],
                height=size[0],
                width=size[1],
            ).images
        for m, mode in zip(models, modes):
            m.train(mode)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"step-{step}.png"
        make_grid(images).save(path)
        log_images(accelerator, "validation", images, step, list(config.prompts))
    accelerator.wait_for_everyone()
    return path
