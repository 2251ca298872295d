"""The settings of one `generate`/`img2img`/`inpaint` run, from the command line over a --from-png record over
the model's defaults, checked in full before torch is imported: every mistake answers at once."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path

from latentforge.commands.adapter_files import (
    LoraUse,
    check_embeddings,
    confined_record_path,
    locate_file,
    lora_uses,
    parse_lora_flag,
)
from latentforge.commands.model_files import check_single_file
from latentforge.commands.png_record import DEFAULT_MODEL_NAME, GenerationRecord, read_record
from latentforge.commands.sampling_flags import NAMES as SAMPLING_NAMES
from latentforge.commands.sampling_flags import given_sampling
from latentforge.commands.shared_flags import check_clip_skip, check_model, model_location
from latentforge.imaging import load_image
from latentforge.models.folder_checks import single_file_options
from latentforge.pipelines.sampling_defaults import IMAGE_TASK_NAMES, check_defaults, model_settings
from latentforge.resources import is_hub_id

TASK_NAMES = ("txt2img", "img2img", "inpaint")
MAX_SEED = 2**64 - 1  # the largest seed a torch.Generator takes
MAX_AREA_WITHOUT_SIZE = 4  # img2img/inpaint without --size: at most 4x the model's area (2x its side)


def settings_from_args(args: argparse.Namespace) -> GenerationRecord:
    """The run's record, with the model and input files as locations to load (not yet as shared)."""
    record = read_record(args.from_png) if args.from_png else GenerationRecord(task=args.task)
    model = args.model or (_recorded_model(record, args.from_png) if args.from_png else None)
    given = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "seed": args.seed,
        "scheduler": args.scheduler,
        "num_images": args.num_images,
        "clip_skip": args.clip_skip,
        "cache_interval": args.cache_interval,
        "cache_warmup": args.cache_warmup,
        "device": args.device,
        "dtype": args.dtype,
        "model": model_location(model, record.task),
        "image": getattr(args, "image", None),
        "mask": getattr(args, "mask", None),
        "paste_back": getattr(args, "paste_back", None),
        "loras": [parse_lora_flag(text) for text in args.lora] if args.lora else None,
        "embeddings": args.embedding,
        **_size(args),
    }
    if not args.from_png:  # a PNG's record is kept whole: the model's defaults do not replace what made it
        given = {**dataclasses.asdict(model_settings(given["model"])), **given}
    given.update(given_sampling(args))
    record = dataclasses.replace(record, **{k: v for k, v in given.items() if v is not None}, grid=False)
    if (args.seed is None and not args.from_png) or args.seed == -1:  # -1: random, as in A1111
        record.seed = random.randrange(2**32)
    if record.task == "txt2img":
        record.strength = None
    # a file the PNG's record names (not one given on the command line) is looked for in confined places
    png = {name: None if given[name] is not None else args.from_png for name in ("image", "mask", "loras")}
    for name in ("image", "mask"):
        if getattr(record, name):
            setattr(record, name, locate_file(getattr(record, name), f"--{name}", png[name]))
    record.loras = [
        {**e, "file": locate_file(e["file"], "--lora", png["loras"], args.lora_dir)} for e in record.loras
    ]
    from_png = None if args.embedding else args.from_png
    record.embeddings = [locate_file(file, "--embedding", from_png) for file in record.embeddings]
    return record


def _recorded_model(record: GenerationRecord, png: str) -> str:
    """The model a PNG's record names: `default`, a path or hub id; a bare folder name needs --model."""
    name = record.model
    if name in ("", DEFAULT_MODEL_NAME) or is_hub_id(name) or confined_record_path(name, "--model"):
        return name
    raise FileNotFoundError(
        f"--from-png: {png} was made with the model {name!r} (weights hash {record.model_hash or 'unknown'}), "
        "which is not a folder here; pass --model with that model's folder"
    )


def _size(args: argparse.Namespace) -> dict[str, int | None]:
    """width and height from --size WxH (or N for NxN), then --width/-W and --height/-H."""
    width = height = None
    if args.size:
        try:
            values = [int(v) for v in args.size.lower().split("x")]
        except ValueError:
            values = []
        if len(values) not in (1, 2):
            raise ValueError(
                f"--size must be WIDTHxHEIGHT or one number for a square, e.g. 512x512 or 512; got {args.size!r}"
            )
        width, height = values[0], values[-1]
    return {"width": args.width or width, "height": args.height or height}


def check_settings(record: GenerationRecord, args: argparse.Namespace) -> None:
    """Every cheap check, before any model loads."""
    if not record.prompt and not args.from_png and args.prompt is None:
        raise ValueError("give a PROMPT (or --from-png FILE)")
    if record.num_images < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise ValueError(
            f"--num-images and --batch-size must be >= 1, got {record.num_images} and {args.batch_size}"
        )
    if record.task not in TASK_NAMES:
        raise ValueError(
            f"--from-png: the record's task {record.task!r} is not one of {', '.join(TASK_NAMES)}"
        )
    if not 0 <= record.seed <= MAX_SEED - record.num_images + 1:
        raise ValueError(
            f"--seed must be in [0, {MAX_SEED - record.num_images + 1}] (-1 or none: random), got {record.seed}"
        )
    if record.task != "txt2img" and not record.image:
        raise ValueError(f"{args.command}: --image is required (the image to redraw)")
    if record.task == "inpaint" and not record.mask:
        raise ValueError("inpaint: --mask is required (white = repaint, black = keep)")
    check_clip_skip(record.clip_skip)
    for flag, value, least, meaning in (
        ("--cache-interval", record.cache_interval, 1, "1 = no step caching"),
        ("--cache-warmup", record.cache_warmup, 0, "first steps run in full"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{flag} must be an integer >= {least} ({meaning}), got {value}")
    sampling = (*SAMPLING_NAMES, *IMAGE_TASK_NAMES)
    values = {k: getattr(record, k) for k in sampling if getattr(record, k) is not None}
    check_defaults(values, "out of range")
    check_model(record.model)
    _check_size(record)
    _check_input_images(record)


@dataclasses.dataclass
class LoadPlan:
    """How to load the model of a run: `from_single_file`'s options (for a file), the LoRAs and embeddings."""

    file_options: dict
    loras: list[LoraUse]


def load_plan(record: GenerationRecord, args: argparse.Namespace) -> LoadPlan:
    """The run's plan, every file found and checked (a pickle needs --allow-pickle) before any model loads."""
    options = single_file_options(args)
    check_single_file(record.model, options)
    check_embeddings(record.embeddings, options["allow_pickle"])
    loras = lora_uses(record.loras, record.prompt, args.lora_dir, options["allow_pickle"])
    return LoadPlan(options, loras)


def _check_size(record: GenerationRecord) -> None:
    """Width and height: positive multiples of the VAE's downscale factor (read from a local model's config)."""
    factor = vae_factor(record.model)
    for name in ("width", "height"):
        value = getattr(record, name)
        if value is not None and (value < 1 or (factor and value % factor)):
            raise ValueError(
                f"--size/--{name}: width and height must be positive multiples of {factor or 1} (the VAE's "
                f"downscale factor), got {record.width}x{record.height}"
            )


def _check_input_images(record: GenerationRecord) -> None:
    """--image and --mask readable (not cut, not a decompression bomb) and of one size, before torch loads;
    without --size, an image far larger than the model's size is refused (it would be drawn at its own size)."""
    image = load_image(record.image, "--image") if record.image else None
    mask = load_image(record.mask, "--mask", mode="L") if record.mask else None
    if image is not None and mask is not None and image.size != mask.size:
        raise ValueError(
            f"--mask is {mask.width}x{mask.height} but --image is {image.width}x{image.height}; give a mask of "
            "the image's size (white = repaint)"
        )
    side = model_side(record.model)
    if image is None or record.width or record.height or not side:
        return
    area = image.width * image.height
    if area > MAX_AREA_WITHOUT_SIZE * side * side:
        scale, factor = (side * side / area) ** 0.5, vae_factor(record.model) or 1
        width, height = (max(factor, round(v * scale / factor) * factor) for v in image.size)
        raise ValueError(
            f"--image is {image.width}x{image.height}, {area / side**2:.0f}x the area the model draws "
            f"({side}x{side}), and without --size it would be drawn at its own size (slow, and beyond what the "
            f"model learned); pass --size {width}x{height} (the image's shape at the model's size) or any "
            f"--size up to twice the model's side"
        )


def _config(model: str, component: str) -> dict | None:
    """`model/component/config.json` as a dict; None without the file (the model loader reports a bad one)."""
    path = Path(model) / component / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return config if isinstance(config, dict) else None


def vae_factor(model: str) -> int | None:
    """2 ** (VAE blocks - 1) from `model/vae/config.json`, as diffusers computes it; None without the file."""
    blocks = (_config(model, "vae") or {}).get("block_out_channels")
    return 2 ** (len(blocks) - 1) if isinstance(blocks, list) else None


def model_side(model: str) -> int | None:
    """The side in pixels a local model draws by default (U-Net sample_size x VAE factor), as its pipeline does;
    None when the folder's configs do not say (a single file, a hub id)."""
    sample_size, factor = (_config(model, "unet") or {}).get("sample_size"), vae_factor(model)
    return sample_size * factor if isinstance(sample_size, int) and factor else None
