"""latentforge generate | img2img | inpaint: make images from a prompt (generate), redraw an image guided by
a prompt (img2img), or repaint the white part of a mask (inpaint), and save each as a PNG.

Without --model, the built-in default model draws. Settings not given come from the model's
generation_defaults.json (steps, guidance, rescale, and for img2img/inpaint the strength and mask blur),
else the fallbacks shown beside each option. -o takes a .png file name (several images: NAME-i.png and
NAME-grid.png) or a folder (numbered files NNNNN-SEED.png, as A1111 writes them); without -o, images go to
the folder `outputs`. Image i of a run gets the seed SEED + i, so it is the same image whatever the batch
size. Every PNG carries its generation record (A1111's `parameters` text and a JSON record with the model's
name and weights hash; --record-paths adds the folders), and --from-png FILE makes the same image again:
options given on the command line override the record.
"""

from __future__ import annotations

import argparse

from latentforge.commands.adapter_files import add_adapter_arguments
from latentforge.commands.generation_settings import check_settings, load_plan, settings_from_args
from latentforge.commands.model_files import add_single_file_arguments
from latentforge.commands.output_paths import output_paths
from latentforge.commands.sampling_flags import add_sampling_arguments, add_scheduler_argument
from latentforge.commands.shared_flags import (
    add_conditioning_arguments,
    add_dtype_argument,
    add_model_argument,
)

TASKS = {"generate": "txt2img", "img2img": "img2img", "inpaint": "inpaint"}
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs
HELPS = {
    "generate": "text-to-image: make images from a prompt.",
    "img2img": "image-to-image: redraw --image guided by a prompt.",
    "inpaint": "inpainting: repaint the white part of --mask in --image.",
}
INPUTS = {"generate": "", "img2img": " --image IMAGE", "inpaint": " --image IMAGE --mask MASK"}


def register(subparsers: argparse._SubParsersAction) -> None:
    for command, help_text in HELPS.items():
        usage = (
            f"latentforge {command} PROMPT{INPUTS[command]} [-o FILE.png|FOLDER] [options]\n"
            f"       latentforge {command} --from-png FILE [-o FILE.png|FOLDER] [options]"
        )
        parser = subparsers.add_parser(
            command, help=help_text, description=__doc__, formatter_class=RAW, usage=usage
        )
        parser.add_argument("prompt", nargs="?", help="what to draw; A1111 weights like (word:1.3) work.")
        if command != "generate":
            inputs = parser.add_argument_group("required inputs (a --from-png record may give them)")
            inputs.add_argument("--image", help="input image file.")
        if command == "inpaint":
            inputs.add_argument(
                "--mask", help="mask image file: white = repaint, black = keep, grey = blend."
            )
            parser.add_argument(
                "--no-paste-back",
                dest="paste_back",
                action="store_false",
                default=None,
                help="keep the decoded pixels outside the mask instead of the input's exact pixels.",
            )
        _add_common_arguments(parser, TASKS[command])
        parser.set_defaults(run=_run, task=TASKS[command])


def _add_common_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    parser.add_argument(
        "-o", "--output", help="a .png file or a folder (default: numbered files in the folder outputs)."
    )
    add_model_argument(parser)
    add_sampling_arguments(parser, image_task="" if task == "txt2img" else task)
    add_scheduler_argument(parser)
    parser.add_argument("--seed", type=int, help="seed of the first image (default or -1: random).")
    parser.add_argument(
        "--cache-interval",
        type=int,
        help="step caching (DeepCache): run the whole U-Net every N steps and reuse its deep features in "
        "between; 1 = off, the exact path (default); 5 with --cache-warmup 3 is about 2.1x faster and keeps "
        "the default model's benchmark score (README: Speed).",
    )
    parser.add_argument(
        "--cache-warmup",
        type=int,
        help="with --cache-interval: run the first N steps all in full before caching starts (default 0).",
    )
    parser.add_argument(
        "--size",
        help="WIDTHxHEIGHT in pixels, or one number for a square (default: the model's size; img2img and "
        "inpaint: the image's, rounded down to a multiple of the VAE factor; an image over 4x the model's "
        "area needs --size).",
    )
    parser.add_argument("-W", "--width", type=int, help="image width in pixels (over --size).")
    parser.add_argument("-H", "--height", type=int, help="image height in pixels (over --size).")
    parser.add_argument("--num-images", type=int, help="images to make (default 1).")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: all at once).")
    add_conditioning_arguments(parser)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cuda when available).")
    add_dtype_argument(parser)
    add_adapter_arguments(parser)
    parser.add_argument("--from-png", help="regenerate the image whose parameters this PNG carries.")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files.")
    parser.add_argument(
        "--record-paths",
        action="store_true",
        help="write the model's and input files' folders into the PNG record (default: names only).",
    )
    add_single_file_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    record = settings_from_args(args)
    check_settings(record, args)
    plan = load_plan(record, args)
    paths = output_paths(args.output, [record.seed + i for i in range(record.num_images)], args.overwrite)
    # Imported here, not at the top: it imports torch and diffusers, and cli.py imports this module to build
    # its parser, so `latentforge --help` and every argument error would wait for them.
    from latentforge.commands.generation_run import generate_images

    generate_images(record, paths, args.batch_size or record.num_images, args.record_paths, plan)
    return 0
