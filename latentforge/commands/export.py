"""latentforge export SOURCE OUTPUT: save a model in the diffusers layout (safetensors, fp32 or --fp16) that
stock `StableDiffusionPipeline.from_pretrained` loads.

SOURCE is a diffusers-layout model (local folder, or hub id when online), or with --architecture an
architecture (a name in configs/models/ or a folder of configs) filled with seeded random weights.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from latentforge.commands.sampling_flags import add_sampling_arguments, given_sampling
from latentforge.pipelines.sampling_defaults import FILE, check_defaults, read_defaults, write_defaults

HELP = "save a model as a diffusers folder (safetensors, fp32 or fp16)"
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help=HELP, description=__doc__, formatter_class=RAW)
    parser.add_argument(
        "source", help="model folder, hub id, or architecture name/folder with --architecture"
    )
    parser.add_argument("output", help="folder to write (must not exist unless --overwrite)")
    parser.add_argument(
        "--architecture", action="store_true", help="SOURCE is an architecture: random weights"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights with --architecture")
    parser.add_argument("--fp16", action="store_true", help="store weights in float16 (half the size)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    recommended = parser.add_argument_group(
        "recommended sampling settings",
        "stored in OUTPUT/generation_defaults.json (over SOURCE's); `generate` and `eval` use them when a "
        "setting is not given",
    )
    add_sampling_arguments(recommended)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from latentforge.models.components import Components  # here: it imports torch, --help must not wait

    given = check_defaults(given_sampling(args), "export")  # before anything is loaded or written
    has_own = not args.architecture and (Path(args.source) / FILE).is_file()
    defaults = read_defaults(args.source).updated(**given) if has_own or given else None
    if args.architecture:
        components = Components.from_architecture(args.source, seed=args.seed)
    else:
        components = Components.from_pretrained(args.source)
    components.save_pretrained(args.output, fp16=args.fp16, overwrite=args.overwrite)
    card = Path(args.source) / "README.md"
    if not args.architecture and card.is_file():  # the model card (training data, results, config) goes along
        shutil.copyfile(card, Path(args.output) / "README.md")
    if defaults is not None:
        write_defaults(args.output, defaults)
    print(f"saved {args.output}")
    return 0
