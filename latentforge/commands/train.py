"""latentforge train {vae,clip,unet} --config CONFIG [KEY=VALUE ...]: run one training stage.

CONFIG is a name in configs/train/ (the folder ships with the package) or a YAML file of overrides of the
stage's settings; KEY=VALUE pairs override the file (dotted for groups, e.g. optim.max_steps=200
checkpoint.resume=latest). The run's folder is output_dir=DIR (or -o DIR): checkpoints, logs, validation
images and the exported model go there. Ctrl-C or SIGTERM saves a checkpoint and stops; run the same command
with checkpoint.resume=latest to continue. Works as is on one process and under
`accelerate launch -m latentforge train ...` on several.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from latentforge.commands.png_record import DEFAULT_MODEL_NAME
from latentforge.commands.shared_flags import add_overrides_argument, check_overrides
from latentforge.config_loader import load_config
from latentforge.models.folder_checks import PICKLE_SUFFIXES
from latentforge.resources import config_file, is_hub_id, shipped_names

STAGES = ("vae", "clip", "unet")  # the keys of training.stage_configs.STAGE_CONFIGS
# keys that name a model or architecture to start from, checked (and named) before anything loads
MODEL_KEYS = {"vae": ("model",), "clip": ("architecture",), "unet": ("base", "vae_from", "text_encoder_from")}

HELP = "train the VAE, the CLIP text encoder or the U-Net (accelerate launch for several processes)."
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs


def register(subparsers: argparse._SubParsersAction) -> None:
    names = ", ".join(shipped_names("train"))
    parser = subparsers.add_parser(
        "train",
        help=HELP,
        description=__doc__,
        formatter_class=RAW,
        usage="latentforge train {vae,clip,unet} --config CONFIG [KEY=VALUE ...] [-o DIR]",
        epilog=f"shipped configs (configs/train/): {names}; recipes (configs/recipes/): "
        f"{', '.join(shipped_names('recipes'))}.",
    )
    parser.add_argument(
        "stage",
        choices=[*STAGES, "recipe"],
        help="what to train; recipe: several stages in order (configs/recipes/).",
    )
    add_overrides_argument(parser, "fields of the stage's config, dotted for groups", "optim.max_steps=200")
    parser.add_argument("--config", help="a config name (listed below) or a YAML path; required.")
    parser.add_argument("-o", "--output", help="the run's folder: the same as output_dir=DIR.")
    parser.add_argument("--stop-after", metavar="STAGE", help="recipe: stop after this stage (resume later).")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if args.stage == "recipe":
        return _run_recipe(args)
    if not args.config:  # a default run is 20+ minutes of work: never start one by accident
        raise ValueError(
            f"train {args.stage}: --config is required: one of {shipped_names('train')} or a YAML file "
            "(an empty one gives the stage's built-in defaults)"
        )
    path = config_file("train", args.config)
    overrides = [*args.overrides, *([f"output_dir={args.output}"] if args.output else [])]
    check_overrides(overrides)
    # The stage configs are torch-free, so typos fail at once; imported here because building the CLI's
    # parser must not import the training package.
    from latentforge.training.stage_configs import STAGE_CONFIGS

    config = load_config(STAGE_CONFIGS[args.stage], path, overrides)
    check_model_keys(args.stage, config)
    check_run_inputs(config)
    # Explicit stage -> module table (no import strings), imported here: each trainer pulls in torch and
    # accelerate, which `latentforge --help` and the checks above must not wait for.
    if args.stage == "vae":
        from latentforge.training import vae as stage
    elif args.stage == "clip":
        from latentforge.training import clip as stage
    else:
        from latentforge.training import unet as stage
    from latentforge.commands.library_output import quiet_library_progress_bars

    quiet_library_progress_bars()
    if os.environ.get("RANK", "0") == "0":  # once under accelerate launch
        print(
            f"train {args.stage}: --config {args.config} -> {config.output_dir}: {config.optim.max_steps} steps at "
            f"batch {config.optim.batch_size}, a checkpoint every {config.checkpoint.every_steps or '(never)'} steps "
            "and at Ctrl-C"
        )
    output = stage.train(config)
    print(f"done: {output}")
    return 0


def _run_recipe(args: argparse.Namespace) -> int:
    """`train recipe --config NAME [output_dir=DIR] [STAGE.KEY=VALUE ...]`: the stages in order, then the export."""
    from latentforge.training.recipe import load_recipe, run_recipe

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "train recipe runs its stages one after another, each in its own process: start it as a plain "
            "command, not under accelerate launch (launch a single stage with accelerate instead)"
        )
    if not args.config:
        raise ValueError(
            f"train recipe: --config is required: one of {shipped_names('recipes')} or a YAML file"
        )
    overrides = [*args.overrides, *([f"output_dir={args.output}"] if args.output else [])]
    recipe = load_recipe(config_file("recipes", args.config), overrides)
    outputs = run_recipe(recipe, _train_or_export, args.stop_after or "")
    print(
        f"done: {', '.join(map(str, outputs))}"
        if outputs
        else f"done: stages up to {args.stop_after or 'the last'} in {recipe.output_dir}"
    )
    return 0


def _train_or_export(argv: list[str]) -> int:
    """`latentforge train ...` or `latentforge export ...` in a process of its own (a recipe's step): each
    stage starts with fresh memory and accelerate state, as when its command is typed."""
    return subprocess.run([sys.executable, "-m", "latentforge", *argv]).returncode


def check_model_keys(stage: str, config: object) -> None:
    """FileNotFoundError naming the key (base=, model=, ...) whose model folder or architecture is missing;
    ValueError for a pickled checkpoint (training reads .safetensors: `export` converts it once)."""
    architectures = shipped_names("models")
    for key in MODEL_KEYS[stage]:
        value = str(getattr(config, key))
        if Path(value).is_file() and Path(value).suffix.lower() in PICKLE_SUFFIXES:
            raise ValueError(
                f"{key}={value} is a pickle; training reads .safetensors only: convert it once with "
                f"`latentforge export {value} {Path(value).with_suffix('.safetensors').name} --allow-pickle` "
                f"(if you trust its source) and set {key}= to that file"
            )
        if (
            not value
            or value == DEFAULT_MODEL_NAME
            or Path(value).exists()
            or value in architectures
            or is_hub_id(value)
        ):
            continue
        if key.endswith("_from"):
            fix = "a trained model folder, or nothing (the base's own)"
        else:
            fix = f"a model folder, a hub id (org/name) or an architecture name (one of {architectures})"
        raise FileNotFoundError(f"{key}={value}: no such folder; set {key}= to {fix}")


def check_run_inputs(config: object) -> None:
    """The run's folder and data sources, before the trainer loads: an empty output_dir would scatter the run's
    folders into the current one; a dataset path that does not exist would fail only after the models load."""
    if not str(config.output_dir).strip():
        raise ValueError("output_dir is empty; set output_dir=DIR (or -o DIR) to the run's own folder")
    if config.data.resolution < 16:
        raise ValueError(f"data.resolution must be at least 16 pixels, got {config.data.resolution}")
    fraction = config.data.max_corrupt_fraction
    if not 0 <= fraction <= 1:
        raise ValueError(
            f"data.max_corrupt_fraction must be in [0, 1] (a share of the images), got {fraction}"
        )
    from latentforge.data.data_config import check_max_upscale  # torch-free
    from latentforge.data.sources import check_metadata_paths  # torch-free

    check_max_upscale(config.data)
    for source in (part.strip() for part in str(config.data.dataset).split("+")):
        folder = Path(source).expanduser()
        looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1
        if looks_like_path and not folder.exists():
            raise FileNotFoundError(
                f"data.dataset: the folder {source} does not exist; set data.dataset= to a folder of images, "
                "a built-in name (shapes, emoji) or a hub id"
            )
        if folder.is_dir():
            check_metadata_paths(
                folder
            )  # a file_name that leads out of the folder, named before any model loads
