"""latentforge eval TASK [KEY=VALUE ...]: the compositional benchmark, emoji fidelity, VAE reconstruction,
FID/KID or CLIP score of a model, written to the output folder as <task>.json, <task>.md and <task>.png.

Without --model, the built-in default model is measured. Settings: defaults < --config (a name in
configs/eval/ or a YAML path) < KEY=VALUE pairs (fields of EvalConfig, e.g. image_size=32) < flags. Unset
sampling settings come from the model's generation_defaults.json, as for `generate`.
"""

from __future__ import annotations

import argparse
import dataclasses

from latentforge.commands.model_files import add_single_file_arguments, check_single_file
from latentforge.commands.sampling_flags import NAMES as SAMPLING_NAMES
from latentforge.commands.sampling_flags import add_sampling_arguments, add_scheduler_argument
from latentforge.commands.shared_flags import (
    add_conditioning_arguments,
    add_dtype_argument,
    add_model_argument,
    add_overrides_argument,
    check_clip_skip,
    check_dtype,
    check_model,
    check_overrides,
    deprecated,
    model_location,
)
from latentforge.config_loader import config_to_dict, load_config
from latentforge.evaluation.eval_config import TASKS, EvalConfig
from latentforge.evaluation.report import check_writable
from latentforge.models.folder_checks import single_file_options
from latentforge.pipelines.sampling_defaults import model_settings
from latentforge.pipelines.schedulers import check_scheduler_name
from latentforge.resources import config_file, shipped_names

# flag -> config field; flags left out keep the value of --config (or the default)
_FLAGS = {
    "--num-prompts": ("num_prompts", int, "compositional: prompts per category; emoji/clip-score: prompts."),
    "--images-per-prompt": ("images_per_prompt", int, "compositional: images per prompt."),
    "--num-images": ("num_images", int, "fid: images per set; vae: held-out images."),
    "--seed": ("seed", int, "seed of the prompt set and of the images."),
    "--batch-size": ("batch_size", int, "images per pipeline call."),
    "--clip": ("clip", str, "open_clip folder: needed by clip-score, used by fid and emoji."),
    "--features": ("features", str, "fid feature space: auto, inception, clip, pixels."),
    "--device": ("device", str, "auto, cpu, cuda, ..."),
}
_FILE_DESTS = ["model_architecture", "prediction_type", "use_ema", "allow_pickle"]  # as EvalConfig names them
_DESTS = [
    "model",
    *_FILE_DESTS,
    "dtype",
    *(dest for dest, _, _ in _FLAGS.values()),
    *SAMPLING_NAMES,
    "negative_prompt",
    "clip_skip",
    "scheduler",
    "output_dir",
]

HELP = "evaluate a model: compositional, emoji, vae, fid, clip-score."
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help=HELP, description=__doc__, formatter_class=RAW)
    parser.add_argument("task", choices=TASKS, help="what to measure.")
    add_overrides_argument(parser, "fields of EvalConfig", "image_size=32")
    add_model_argument(parser, "diffusers model folder or single-file checkpoint (for vae also a VAE folder)")
    add_dtype_argument(parser)
    for flag, (dest, kind, help_text) in _FLAGS.items():
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)
    add_sampling_arguments(parser)
    add_conditioning_arguments(parser)
    add_scheduler_argument(parser)
    add_single_file_arguments(parser)
    parser.add_argument(
        "-o", "--output", "--output-dir", dest="output_dir", help="report folder (default: eval)."
    )
    parser.add_argument(
        "--config", help=f"a name in configs/eval/ ({', '.join(shipped_names('eval'))}) or a YAML path."
    )
    parser.add_argument("--overwrite", action="store_true", default=None, help="replace an existing report.")
    parser.add_argument(
        "--set",
        dest="set_overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="deprecated: put KEY=VALUE after the task.",
    )
    parser.set_defaults(run=_run)


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The run's settings, checked in full (model, scheduler, sampling values, report folder)."""
    if args.set_overrides:
        deprecated("--set KEY=VALUE", "KEY=VALUE after the task (latentforge eval vae image_size=32)")
    overrides = [*args.overrides, *args.set_overrides]
    check_overrides(overrides)
    path = config_file("eval", args.config) if args.config else None
    config = load_config(EvalConfig, path, overrides)
    # flags last, as typed values: a path is never re-read as YAML (e.g. a folder named "1e3" or "on")
    flags = {d: getattr(args, d) for d in _DESTS if getattr(args, d) is not None}
    config = dataclasses.replace(config, **flags, overwrite=bool(args.overwrite or config.overwrite))
    config = dataclasses.replace(config, model=model_location(config.model, args.task))
    check_model(config.model, hub_ids=False)
    check_single_file(config.model, single_file_options(config))
    check_dtype(config.dtype)
    check_clip_skip(config.clip_skip)
    if config.scheduler:
        check_scheduler_name(config.scheduler)
    sampling = model_settings(config.model, **{n: getattr(config, n) for n in SAMPLING_NAMES})
    config = dataclasses.replace(config, **{n: getattr(sampling, n) for n in SAMPLING_NAMES})
    if args.task == "clip-score" and not config.clip:
        raise ValueError("eval clip-score: --clip is required (an open_clip folder)")
    check_writable(config.output_dir, args.task, config.overwrite)
    return config


def _run(args: argparse.Namespace) -> int:
    config = eval_config(args)  # every cheap check before torch, models and images
    # imported here, not at the top: the evaluation modules import torch, and `latentforge --help` builds
    # this command's parser without them
    from latentforge.commands.library_output import quiet_library_progress_bars
    from latentforge.evaluation.tasks import run_evaluation

    quiet_library_progress_bars()
    report = run_evaluation(args.task, config, {"task": args.task, **config_to_dict(config)})
    for metric in report.metrics:
        value = f"{metric.value:.4g}" if isinstance(metric.value, float) else str(metric.value)
        print(f"{metric.name:>32}: {value:<10} {metric.note}")
    for path in report.write(config.output_dir, overwrite=config.overwrite):
        print(f"wrote {path}")
    return 0
