"""The flags every command spells the same way: --model (with `default`), --negative, --clip-skip and --dtype
(generate and eval), KEY=VALUE config overrides after the positional arguments, and the one-line deprecation
notice of a renamed flag."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from latentforge.commands.png_record import DEFAULT_MODEL_NAME
from latentforge.models.folder_checks import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX
from latentforge.resources import DEFAULT_INPAINT_MODEL, DEFAULT_MODEL, is_hub_id

DTYPES = ("auto", "float32", "float16", "bfloat16")  # --dtype of generate and eval


def add_model_argument(
    parser: argparse.ArgumentParser, what: str = "diffusers model folder or hub id"
) -> None:
    """--model, whose default is the built-in default model (also named by `--model default`)."""
    parser.add_argument(
        "--model",
        help=f"{what}, or `{DEFAULT_MODEL_NAME}` (default: the built-in default model).",
    )


def model_location(value: str | None, task: str = "txt2img") -> str:
    """The folder or hub id to load: for None, "" and "default" the built-in default model, or for inpainting
    its inpainting variant when that is installed."""
    if value not in (None, "", DEFAULT_MODEL_NAME):
        return str(value)
    if task in ("inpaint", "inpainting") and DEFAULT_INPAINT_MODEL.is_dir():
        return str(DEFAULT_INPAINT_MODEL)
    return str(DEFAULT_MODEL)


def check_model(model: str, hub_ids: bool = True, flag: str = "--model") -> None:
    """FileNotFoundError when `model` is neither an existing path nor (with `hub_ids`) a hub id like org/name,
    or when it is the built-in default model and that is not installed."""
    if model == str(DEFAULT_MODEL) and not DEFAULT_MODEL.is_dir():
        raise FileNotFoundError(
            f"the built-in default model is not installed ({DEFAULT_MODEL.name} is missing from the package); "
            "pass --model with a diffusers model folder or hub id"
        )
    hub_id = hub_ids and is_hub_id(model)
    if not Path(model).exists() and not hub_id:
        also = " (and it is not a hub id like org/name)" if hub_ids else ""
        what = "file" if Path(model).suffix.lower() in (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES) else "folder"
        raise FileNotFoundError(f"{flag}: {what} {model} does not exist{also}")


def add_conditioning_arguments(parser: argparse.ArgumentParser) -> None:
    """--negative (--negative-prompt) and --clip-skip, as `generate` and `eval` take them."""
    parser.add_argument("--negative", "--negative-prompt", dest="negative_prompt", help="negative prompt.")
    parser.add_argument(
        "--clip-skip", type=int, help="skip the last N text-encoder layers (diffusers' convention)."
    )


def check_clip_skip(value: int | None) -> None:
    """ValueError for a negative --clip-skip."""
    if value is not None and value < 0:
        raise ValueError(f"--clip-skip must be >= 0, got {value}")


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """--dtype, the precision the model's weights are loaded in."""
    parser.add_argument(
        "--dtype", choices=DTYPES, help="weights precision (default auto: float16 on CUDA, else float32)."
    )


def check_dtype(value: str) -> None:
    """ValueError for a precision that is not one of DTYPES (a config file's `dtype:`)."""
    if value not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {value!r}")


def add_overrides_argument(parser: argparse.ArgumentParser, fields: str, example: str) -> None:
    """Positional KEY=VALUE overrides (`fields` names what they set); cli.main adds those that follow options."""
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help=f"settings over the config file: {fields} (e.g. {example}).",
    )


def check_overrides(overrides: list[str]) -> None:
    """ValueError naming the items that are not KEY=VALUE."""
    bad = [item for item in overrides if "=" not in item or item.startswith("=")]
    if bad:
        raise ValueError(f"overrides must look like KEY=VALUE (e.g. optim.max_steps=100), got {bad}")


class DeprecatedFlag(UserWarning):
    """A flag that still works under its old spelling (a UserWarning: shown to every user, once)."""


def deprecated(old: str, new: str) -> None:
    """One warning line: `old` still works and will go; `new` is the spelling to use."""
    warnings.warn(f"{old} is deprecated and will be removed; use {new}", DeprecatedFlag, stacklevel=2)
