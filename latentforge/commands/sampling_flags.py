"""The sampling flags that `generate`, `img2img`, `inpaint`, `eval` and `export` share: one spelling, one
destination (the fields of `SamplingSettings`), one help text."""

from __future__ import annotations

import argparse
from typing import Any

from latentforge.pipelines.sampling_defaults import FALLBACK

NAMES = ("steps", "guidance_scale", "guidance_rescale")


def add_sampling_arguments(parser: argparse.ArgumentParser | Any, default: str | None = None) -> None:
    """--steps, --guidance and --guidance-rescale; `default` says where unset values come from, "{}" being
    the fallback value (None: no default is named)."""

    def note(value: float) -> str:
        return "" if default is None else f" ({default.format(value)})"

    parser.add_argument("--steps", type=int, help="denoising steps" + note(FALLBACK.steps))
    parser.add_argument(
        "--guidance",
        type=float,
        dest="guidance_scale",
        help="classifier-free guidance scale" + note(FALLBACK.guidance_scale),
    )
    parser.add_argument(
        "--guidance-rescale",
        type=float,
        help="guidance rescale in [0, 1] (0.7 suits zero-terminal-SNR models)"
        + note(FALLBACK.guidance_rescale),
    )


def given_sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags given on the command line, by SamplingSettings field name."""
    return {name: getattr(args, name) for name in NAMES if getattr(args, name, None) is not None}
