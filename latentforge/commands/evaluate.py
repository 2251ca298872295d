"""latentforge eval TASK --model PATH ...: the compositional benchmark, emoji fidelity, VAE reconstruction,
FID/KID or CLIP score of a model, written to the output folder as <task>.json, <task>.md and <task>.png.

Settings: defaults < --config YAML < --set KEY=VALUE (fields of EvalConfig) < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from latentforge.commands.sampling_flags import NAMES as SAMPLING_NAMES
from latentforge.commands.sampling_flags import add_sampling_arguments
from latentforge.config_loader import config_to_dict, load_config
from latentforge.evaluation.eval_config import TASKS, EvalConfig
from latentforge.evaluation.report import check_writable
from latentforge.resources import config_file

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


HELP = "evaluate a model: compositional, emoji, vae, fid, clip-score"
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help=HELP, description=__doc__, formatter_class=RAW)
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
    # imported here, not at the top: the evaluation modules import torch, and `latentforge --help` builds
    # this command's parser without them
    from latentforge.evaluation.tasks import run_evaluation, with_model_defaults

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

    report = run_evaluation(args.task, config, {"task": args.task, **config_to_dict(config)})
    for metric in report.metrics:
        value = f"{metric.value:.4g}" if isinstance(metric.value, float) else str(metric.value)
        print(f"{metric.name:>32}: {value:<10} {metric.note}")
    for path in report.write(config.output_dir, overwrite=config.overwrite):
        print(f"wrote {path}")
    return 0
