"""`latentforge eval TASK --model PATH ...`: compositional benchmark, emoji fidelity, VAE reconstruction,
FID/KID and CLIP score, each written as JSON + Markdown + image grid."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from latentforge.commands.sampling_flags import NAMES as SAMPLING_NAMES
from latentforge.commands.sampling_flags import add_sampling_arguments
from latentforge.evaluation.eval_config import TASKS
from latentforge.pipelines.sampling_defaults import SamplingSettings

# flag -> config field; flags left out keep the value of --config (or the default)
_FLAGS = {
    "--model": ("model", str, "diffusers-layout model folder (for vae also a VAE folder)"),
    "--num-prompts": ("num_prompts", int, "compositional: prompts per category; emoji/clip-score: prompts"),
    "--images-per-prompt": ("images_per_prompt", int, "compositional: images per prompt"),
    "--num-images": ("num_images", int, "fid: images per set; vae: held-out images"),
    "--seed": ("seed", int, "seed of the prompt set and of the images"),
    "--scheduler": ("scheduler", str, "sampler name, e.g. dpmpp-2m (default: the model's)"),
    "--batch-size": ("batch_size", int, "images per pipeline call"),
    "--clip": ("clip", str, "open_clip folder: needed by clip-score, used by fid and emoji"),
    "--features": ("features", str, "fid feature space: auto, inception, clip, pixels"),
    "--device": ("device", str, "auto, cpu, cuda, ..."),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model: compositional, emoji, vae, fid, clip-score",
        description="Evaluate a model and write <task>.json, <task>.md and <task>.png to the output folder. "
        "Settings: defaults < --config YAML < --set KEY=VALUE (fields of EvalConfig) < flags.",
    )
    parser.add_argument("task", choices=TASKS, help="what to measure")
    for flag, (dest, kind, help_text) in _FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)
    add_sampling_arguments(parser, "default: the model's generation_defaults.json, as for generate")
    parser.add_argument(
        "-o", "--output-dir", dest="output_dir", default=None, help="report folder (default: eval)"
    )
    parser.add_argument("--config", default=None, help="a name in configs/eval/ (quick, full) or a YAML path")
    parser.add_argument("--overwrite", action="store_true", default=None, help="replace an existing report")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="more settings (EvalConfig fields), e.g. --set image_size=32 emoji_skin_tones=true",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from latentforge.config_loader import config_to_dict, load_config
    from latentforge.evaluation.eval_config import EvalConfig
    from latentforge.evaluation.report import check_writable
    from latentforge.resources import config_file

    path = config_file("eval", args.config) if args.config else None
    config = load_config(EvalConfig, path, args.overrides)
    # flags last, as typed values: a path is never re-read as YAML (e.g. a folder named "1e3" or "on")
    dests = [dest for dest, _, _ in _FLAGS.values()] + [*SAMPLING_NAMES, "output_dir", "overwrite"]
    config = dataclasses.replace(
        config, **{d: getattr(args, d) for d in dests if getattr(args, d) is not None}
    )
    # check everything cheap before loading models or generating images
    if not config.model:
        raise ValueError(f"eval {args.task}: --model is required (a diffusers-layout model folder)")
    if not Path(config.model).exists():
        raise FileNotFoundError(f"eval {args.task}: model folder {config.model} does not exist")
    config = with_model_defaults(config)
    if args.task == "clip-score" and not config.clip:
        raise ValueError("eval clip-score: --clip is required (an open_clip folder)")
    check_writable(config.output_dir, args.task, config.overwrite)

    report = _evaluate(args.task, config, {"task": args.task, **config_to_dict(config)})
    for metric in report.metrics:
        value = f"{metric.value:.4g}" if isinstance(metric.value, float) else str(metric.value)
        print(f"{metric.name:>32}: {value:<10} {metric.note}")
    for path in report.write(config.output_dir, overwrite=config.overwrite):
        print(f"wrote {path}")
    return 0


def with_model_defaults(config):
    """`config` with unset sampling settings taken from the model's generation_defaults.json (or FALLBACK)."""
    from latentforge.pipelines.sampling_defaults import read_defaults

    given = {name: getattr(config, name) for name in SAMPLING_NAMES}
    return dataclasses.replace(config, **dataclasses.asdict(read_defaults(config.model).updated(**given)))


def _evaluate(task: str, config, settings: dict):
    from latentforge.models.components import resolve_device

    runners = {
        "compositional": _compositional,
        "emoji": _emoji,
        "vae": _vae,
        "fid": _fid,
        "clip-score": _clip_score,
    }
    return runners[task](config, settings, resolve_device(config.device))


def _sampling(config) -> dict:
    settings = SamplingSettings(config.steps, config.guidance_scale, config.guidance_rescale)
    return {**settings.pipeline_kwargs(), "batch_size": config.batch_size}


def _pipeline(config, device: str):
    from latentforge.evaluation.sampling import load_pipeline

    return load_pipeline(config.model, device, config.scheduler or None)


def _compositional(config, settings: dict, device: str):
    from latentforge.evaluation.compositional import (
        compositional_report,
        evaluate_compositional,
        make_prompt_set,
    )

    prompts = make_prompt_set(config.num_prompts, config.seed)
    pipe = _pipeline(config, device)
    result, images = evaluate_compositional(
        pipe, prompts, config.images_per_prompt, config.seed, **_sampling(config)
    )
    return compositional_report(result, images, settings)


def _clip_or_pixels(config, device: str):
    from latentforge.evaluation.features import ClipEncoder, PixelFeatures

    return ClipEncoder.from_pretrained(config.clip, device) if config.clip else PixelFeatures()


def _emoji(config, settings: dict, device: str):
    from latentforge.evaluation.emoji_fidelity import evaluate_emoji

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


def _vae(config, settings: dict, device: str):
    from latentforge.evaluation.reconstruction import evaluate_vae, heldout_shapes_images, load_vae

    vae = load_vae(config.model).to(device)
    images = heldout_shapes_images(config.num_images, config.image_size, config.seed)
    return evaluate_vae(vae, images, config.batch_size, settings)


def _fid(config, settings: dict, device: str):
    from latentforge.evaluation.distribution import evaluate_fid
    from latentforge.evaluation.features import feature_extractor

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


def _clip_score(config, settings: dict, device: str):
    from latentforge.evaluation.distribution import evaluate_clip_score

    clip = _clip_or_pixels(config, device)
    return evaluate_clip_score(
        _pipeline(config, device),
        clip,
        config.num_prompts,
        config.seed,
        config.image_size,
        settings=settings,
        **_sampling(config),
    )
