"""`latentforge train {vae,clip,unet} --config NAME_OR_YAML [key=value ...]`: run one training stage.

A config name resolves to `configs/train/<name>.yaml`; the YAML holds overrides of the stage's config
dataclass, and `key=value` arguments (dotted for groups: `optim.max_steps=100`) override the file.
Works as is on one process and under `accelerate launch -m latentforge train ...`.
"""

from __future__ import annotations

import argparse

from latentforge.config_loader import load_config
from latentforge.resources import config_file

STAGES = ("vae", "clip", "unet")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the VAE, the CLIP text encoder or the U-Net (accelerate launch for several processes)",
        description="Train one stage. CONFIG is a name in configs/train/ (e.g. shapes-small-vae) or a YAML "
        "file; KEY=VALUE pairs override it (e.g. optim.max_steps=200 checkpoint.resume=latest).",
    )
    parser.add_argument("stage", choices=STAGES, help="what to train")
    # nargs="+" so that overrides may follow --config (argparse cannot split positionals around an option)
    parser.add_argument(
        "--config",
        nargs="+",
        default=None,
        metavar="CONFIG [KEY=VALUE",
        help="config name in configs/train/ or a YAML path, then any KEY=VALUE overrides",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    # Explicit stage -> module table (no import strings), imported here: each trainer pulls in torch and
    # accelerate, which `latentforge --help` must not wait for.
    if args.stage == "vae":
        from latentforge.training import vae as stage
    elif args.stage == "clip":
        from latentforge.training import clip as stage
    else:
        from latentforge.training import unet as stage
    name, *more = args.config or [None]
    overrides = [*args.overrides, *more]
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise ValueError(f"overrides must look like key=value (e.g. optim.max_steps=100), got {bad}")
    path = config_file("train", name) if name else None
    config = load_config(stage.CONFIG_CLASS, path, overrides)
    output = stage.train(config)
    print(f"done: {output}")
    return 0
