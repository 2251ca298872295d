"""The evaluation tasks of `latentforge eval` by name: each runs one benchmark on an `EvalConfig` and returns
its `Report` (JSON + Markdown + image grid)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentforge.evaluation.compositional import (
    compositional_report,
    evaluate_compositional,
    make_prompt_set,
)
from latentforge.evaluation.distribution import evaluate_clip_score, evaluate_fid
from latentforge.evaluation.emoji_fidelity import evaluate_emoji
from latentforge.evaluation.eval_config import EvalConfig
from latentforge.evaluation.features import ClipEncoder, PixelFeatures, feature_extractor
from latentforge.evaluation.inpainting import evaluate_inpainting, make_inpaint_cases
from latentforge.evaluation.reconstruction import evaluate_vae, heldout_shapes_images
from latentforge.evaluation.report import Report
from latentforge.evaluation.sampling import load_pipeline
from latentforge.models.component_files import load_vae
from latentforge.models.components import Components, resolve_device
from latentforge.models.folder_checks import single_file_options
from latentforge.pipelines.pipeline import InpaintPipeline
from latentforge.pipelines.sampling_defaults import SamplingSettings, read_defaults


def run_evaluation(task: str, config: EvalConfig, settings: dict[str, Any]) -> Report:
    """Run `task` (a key of TASK_RUNNERS) with `config`; `settings` are recorded in the report."""
    return TASK_RUNNERS[task](config, settings, resolve_device(config.device))


def _sampling(config: EvalConfig) -> dict[str, Any]:
    settings = SamplingSettings(config.steps, config.guidance_scale, config.guidance_rescale)
    prompt = {"negative_prompt": config.negative_prompt or None, "clip_skip": config.clip_skip}
    return {**settings.pipeline_kwargs(), **prompt, "batch_size": config.batch_size}


def _pipeline(config: EvalConfig, device: str):
    return load_pipeline(
        config.model, device, config.scheduler or None, config.dtype, **single_file_options(config)
    )


def _clip_or_pixels(config: EvalConfig, device: str):
    return ClipEncoder.from_pretrained(config.clip, device) if config.clip else PixelFeatures()


def _compositional(config: EvalConfig, settings: dict, device: str) -> Report:
    prompts = make_prompt_set(config.num_prompts, config.seed)
    pipe = _pipeline(config, device)
    result, images = evaluate_compositional(
        pipe, prompts, config.images_per_prompt, config.seed, **_sampling(config)
    )
    return compositional_report(result, images, settings)


def _inpainting(config: EvalConfig, settings: dict, device: str) -> Report:
    pipe = InpaintPipeline.from_pipe(_pipeline(config, device))
    model = read_defaults(
        config.model
    )  # its inpainting defaults, else SamplingSettings' (A1111's 0.75 and 4)
    call = {k: v for k, v in _sampling(config).items() if k != "batch_size"}
    call |= {"strength": model.strength, "mask_blur": model.mask_blur}
    settings = {**settings, "strength": call["strength"], "mask_blur": call["mask_blur"]}
    cases = make_inpaint_cases(config.num_prompts, config.seed)
    return evaluate_inpainting(pipe, cases, config.seed, config.batch_size, settings, **call)


def _emoji(config: EvalConfig, settings: dict, device: str) -> Report:
    extractor = _clip_or_pixels(config, device)  # before the pipeline: a bad --clip fails fast
    return evaluate_emoji(
        _pipeline(config, device),
        extractor,
        config.num_prompts,
        config.seed,
        config.image_size,
        config.emoji_skin_tones,
        settings,
        **_sampling(config),
    )


def _vae(config: EvalConfig, settings: dict, device: str) -> Report:
    if Path(config.model).is_file():  # a single-file checkpoint: its VAE
        vae = Components.from_pretrained(config.model, **single_file_options(config)).vae
    else:
        vae = load_vae(config.model)
    vae = vae.to(device).eval()
    images = heldout_shapes_images(config.num_images, config.image_size, config.seed)
    return evaluate_vae(vae, images, config.batch_size, settings)


def _fid(config: EvalConfig, settings: dict, device: str) -> Report:
    extractor = feature_extractor(config.features, config.clip or None, device)
    return evaluate_fid(
        _pipeline(config, device),
        extractor,
        config.num_images,
        config.seed,
        config.image_size,
        settings=settings,
        **_sampling(config),
    )


def _clip_score(config: EvalConfig, settings: dict, device: str) -> Report:
    return evaluate_clip_score(
        _pipeline(config, device),
        _clip_or_pixels(config, device),
        config.num_prompts,
        config.seed,
        config.image_size,
        settings=settings,
        **_sampling(config),
    )


TASK_RUNNERS: dict[str, Callable[[EvalConfig, dict, str], Report]] = {
    "compositional": _compositional,
    "inpainting": _inpainting,
    "emoji": _emoji,
    "vae": _vae,
    "fid": _fid,
    "clip-score": _clip_score,
}
