"""latentforge train {vae,clip,unet} --config CONFIG [KEY=VALUE ...]: run one training stage.

CONFIG is a name in configs/train/ (e.g. shapes-small-vae; the folder ships with the package) or a YAML file
of overrides of the stage's settings; KEY=VALUE pairs override the file (dotted for groups, e.g.
optim.max_steps=200 checkpoint.resume=latest). Works as is on one process and under
`accelerate launch -m latentforge train ...` on several.
"""

from __future__ import annotations

import argparse

from latentforge.config_loader import load_config
from latentforge.resources import config_file

STAGES = ("vae", "clip", "unet")


HELP = "train the VAE, the CLIP text encoder or the U-Net (accelerate launch for several processes)"
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help=HELP, description=__doc__, formatter_class=RAW)
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
