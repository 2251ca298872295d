"""latentforge generate | img2img | inpaint: make images from a prompt (generate), redraw an image guided by
a prompt (img2img), or repaint the white part of a mask (inpaint), and save each as a PNG.

Image i of a run gets the seed SEED + i, so it is the same image whatever the batch size. Every PNG carries
its generation record (A1111's `parameters` text and a JSON record); --from-png FILE makes the same image
again, and options given on the command line override the record.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
from pathlib import Path

from latentforge.commands.png_record import GenerationRecord, read_record, save_png
from latentforge.commands.sampling_flags import add_sampling_arguments, given_sampling
from latentforge.imaging import make_grid
from latentforge.pipelines.sampling_defaults import read_defaults
from latentforge.pipelines.schedulers import SCHEDULER_NAMES
from latentforge.resources import DEFAULT_MODEL

TASKS = {"generate": "txt2img", "img2img": "img2img", "inpaint": "inpaint"}
DEFAULT_STRENGTH = {"txt2img": None, "img2img": 0.75, "inpaint": 1.0}
DTYPES = ("auto", "float32", "float16", "bfloat16")
RAW = argparse.RawDescriptionHelpFormatter  # keep the docstring's paragraphs


def register(subparsers: argparse._SubParsersAction) -> None:
    helps = {
        "generate": "text-to-image: make images from a prompt",
        "img2img": "image-to-image: redraw --image guided by a prompt (--strength)",
        "inpaint": "inpainting: repaint the white part of --mask in --image",
    }
    for command, help_text in helps.items():
        parser = subparsers.add_parser(command, help=help_text, description=__doc__, formatter_class=RAW)
        _add_common_arguments(parser)
        if command != "generate":
            parser.add_argument("--image", help="input image file")
            parser.add_argument(
                "--strength",
                type=float,
                help=f"share of the schedule to run, in (0, 1] (default {DEFAULT_STRENGTH[TASKS[command]]})",
            )
        if command == "inpaint":
            parser.add_argument("--mask", help="mask image file: white = repaint, black = keep, grey = blend")
            parser.add_argument(
                "--mask-blur", type=float, help="Gaussian blur of the mask edge in pixels (default 0)"
            )
            parser.add_argument(
                "--no-paste-back",
                dest="paste_back",
                action="store_false",
                default=None,
                help="keep the decoded pixels outside the mask instead of the input's exact pixels",
            )
        parser.set_defaults(run=_run, task=TASKS[command])


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="what to draw; A1111 weights like (word:1.3) work")
    parser.add_argument(
        "-o", "--output", required=True, help="PNG file to write (several images: NAME-i.png + NAME-grid.png)"
    )
    parser.add_argument("--model", help=f"diffusers model folder or hub id (default {DEFAULT_MODEL})")
    parser.add_argument("--negative", help="negative prompt")
    add_sampling_arguments(parser, "default: the model's generation_defaults.json, else {}")
    parser.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    parser.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="sampler (default: the model's own)")
    parser.add_argument(
        "--size", help="WIDTHxHEIGHT in pixels, multiples of the VAE factor (default: the model's size)"
    )
    parser.add_argument("--num-images", type=int, help="images to make (default 1)")
    parser.add_argument(
        "--clip-skip", type=int, help="skip the last N text-encoder layers (diffusers' convention)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=DTYPES, help="weights precision (default: float16 on CUDA, else float32)"
    )
    parser.add_argument("--from-png", help="regenerate the image whose parameters this PNG carries")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _settings(args: argparse.Namespace) -> GenerationRecord:
    """The generation record for this run: command line over --from-png record over the model's defaults."""
    if args.from_png:
        record = read_record(args.from_png)
    else:
        record = GenerationRecord(
            task=args.task, **dataclasses.asdict(read_defaults(args.model or DEFAULT_MODEL))
        )
    given = {
        "prompt": args.prompt,
        "negative_prompt": args.negative,
        **given_sampling(args),
        "seed": args.seed,
        "scheduler": args.scheduler,
        "num_images": args.num_images,
        "clip_skip": args.clip_skip,
        "device": args.device,
        "dtype": args.dtype,
        "model": args.model,
        "strength": getattr(args, "strength", None),
        "image": getattr(args, "image", None),
        "mask": getattr(args, "mask", None),
        "mask_blur": getattr(args, "mask_blur", None),
        "paste_back": getattr(args, "paste_back", None),
    }
    if args.size:
        given["width"], given["height"] = _parse_size(args.size)
    # Unset fields keep the record's values: the PNG's, or the model's defaults.
    record = dataclasses.replace(record, **{k: v for k, v in given.items() if v is not None}, grid=False)
    if args.seed is None and not args.from_png:
        record.seed = random.randrange(2**32)
    if record.strength is None:
        record.strength = DEFAULT_STRENGTH[record.task]
    record.model = record.model or str(DEFAULT_MODEL)
    if Path(record.model).exists():
        record.model = str(Path(record.model).resolve())
    for name in ("image", "mask"):
        if getattr(record, name):
            setattr(record, name, str(Path(getattr(record, name)).resolve()))
    return record


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 512x512; got {text!r}") from None
    return width, height


def _check(record: GenerationRecord, args: argparse.Namespace) -> list[Path]:
    """Cheap checks before any model loads; returns the output paths."""
    if args.prompt is None and not args.from_png:
        raise ValueError("give a PROMPT (or --from-png FILE)")
    if record.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {record.num_images}")
    if record.task != "txt2img" and not record.image:
        raise ValueError(f"{args.command}: --image is required")
    if record.task == "inpaint" and not record.mask:
        raise ValueError("inpaint: --mask is required (white = repaint, black = keep)")
    model = Path(record.model)
    if record.model == str(DEFAULT_MODEL) and not model.is_dir():
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL} is not installed; pass --model with a diffusers model folder or hub id"
        )
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise ValueError(
            f"-o/--output must be a .png file (it carries the generation parameters), got {output}"
        )
    paths = (
        [output]
        if record.num_images == 1
        else [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(record.num_images)]
        + [output.with_name(f"{output.stem}-grid{output.suffix}")]
    )
    existing = [str(p) for p in paths if p.exists()]
    if existing and not args.overwrite:
        raise ValueError(f"output exists: {', '.join(existing)}; pass --overwrite to replace")
    return paths


def _run(args: argparse.Namespace) -> int:
    record = _settings(args)
    paths = _check(record, args)
    # Imported here, not at the top: they import torch and diffusers, and cli.py imports this module to build
    # its parser, so `latentforge --help` would wait for them.
    import torch

    from latentforge.models.components import resolve_device
    from latentforge.pipelines.call_args import CallArgs
    from latentforge.pipelines.image_inputs import load_image
    from latentforge.pipelines.pipeline import PIPELINES

    image = load_image(record.image, "--image") if record.image else None
    mask = load_image(record.mask, "--mask", mode="L") if record.mask else None
    record.device = resolve_device(record.device)
    if (record.dtype or "auto") == "auto":
        record.dtype = "float16" if torch.device(record.device).type == "cuda" else "float32"
    pipe = PIPELINES[record.task].from_pretrained(record.model, torch_dtype=getattr(torch, record.dtype))
    pipe.to(record.device)
    if record.scheduler:
        pipe.set_scheduler(record.scheduler)
    _check_weights_hash(record, pipe.components.weights_hash())
    call = CallArgs(
        prompt=record.prompt,
        negative_prompt=record.negative_prompt or None,
        num_inference_steps=record.steps,
        guidance_scale=record.guidance_scale,
        guidance_rescale=record.guidance_rescale,
        clip_skip=record.clip_skip,
        height=record.height,
        width=record.width,
        num_images_per_prompt=record.num_images,
        generator=[record.seed + i for i in range(record.num_images)],
    )
    if record.task != "txt2img":
        call = dataclasses.replace(call, image=image, strength=record.strength)
    if record.task == "inpaint":
        call = dataclasses.replace(
            call, mask_image=mask, mask_blur=record.mask_blur, paste_back=record.paste_back
        )
    _save(pipe.generate(call).images, paths, record)
    return 0


def _check_weights_hash(record: GenerationRecord, weights_hash: str) -> None:
    """Warn when the model differs from the one that made the --from-png image; record the hash."""
    if record.model_hash and record.model_hash != weights_hash:
        print(
            f"warning: the model's weights hash {weights_hash} differs from the image's {record.model_hash}",
            file=sys.stderr,
        )
    record.model_hash = weights_hash


def _save(images: list, paths: list[Path], record: GenerationRecord) -> None:
    """Each image with its own seed in its record, then the grid of several."""
    record.width, record.height = images[0].size
    for i, (img, path) in enumerate(zip(images, paths)):
        save_png(img, path, dataclasses.replace(record, seed=record.seed + i, num_images=1))
        print(f"saved {path} (seed {record.seed + i})")
    if len(images) > 1:
        save_png(make_grid(images), paths[-1], dataclasses.replace(record, grid=True))
        print(f"saved {paths[-1]} (grid of {len(images)})")
