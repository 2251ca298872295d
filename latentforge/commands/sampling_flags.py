"""The sampling flags that `generate`, `img2img`, `inpaint`, `eval` and `export` share: one spelling (with the
aliases people know from A1111 and diffusers), one destination (the fields of `SamplingSettings`), one help
text that says the default in effect."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from latentforge.pipelines.sampling_defaults import FALLBACK, IMAGE_TASK_NAMES, read_defaults
from latentforge.pipelines.schedulers import SCHEDULER_NAMES
from latentforge.resources import DEFAULT_MODEL

NAMES = ("steps", "guidance_scale", "guidance_rescale")  # the text-to-image settings
MODEL_DEFAULTS = "the model's generation_defaults.json"


def add_sampling_arguments(
    parser: argparse.ArgumentParser | Any, default: str | None = MODEL_DEFAULTS, image_task: str = ""
) -> None:
    """--steps, --guidance (--cfg-scale) and --guidance-rescale, with --strength for `image_task` "img2img"
    and --mask-blur too for "inpaint" or "both"; `default` says where unset values come from (None: no default
    is named)."""
    helps = {
        "steps": "denoising steps",
        "guidance_scale": "classifier-free guidance scale",
        "guidance_rescale": "guidance rescale in [0, 1], 0.7 suits zero-terminal-SNR models",
        "strength": "img2img and inpaint: share of the schedule to run, in (0, 1]",
        "mask_blur": "inpaint: Gaussian blur of the mask edge, sigma in pixels",
    }
    flags = {"guidance_scale": ["--guidance", "--cfg-scale"]}
    kinds = {"steps": int}
    image_names = {"": (), "img2img": ("strength",)}.get(image_task, IMAGE_TASK_NAMES)
    for name in (*NAMES, *image_names):
        names = flags.get(name, ["--" + name.replace("_", "-")])
        text = helps[name] + _default_note(name, default) + "."
        parser.add_argument(*names, dest=name, type=kinds.get(name, float), help=text)


@functools.cache
def _shipped_defaults():
    """The built-in model's settings, read once for all the flags of all the commands' parsers."""
    return read_defaults(DEFAULT_MODEL)


def _default_note(name: str, default: str | None) -> str:
    if default is None:
        return ""
    shipped = getattr(_shipped_defaults(), name)
    return f" (default: {default}, else {getattr(FALLBACK, name)}; the built-in model: {shipped})"


def add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    """--scheduler, one of the sampler names."""
    parser.add_argument("--scheduler", choices=SCHEDULER_NAMES, help="sampler (default: the model's own).")


def given_sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags given on the command line, by SamplingSettings field name."""
    names = (*NAMES, *IMAGE_TASK_NAMES)
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
