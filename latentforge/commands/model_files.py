"""The flags for the weight files people share, as every command that reads them spells them: a single-file
checkpoint as --model (or export's SOURCE) with --model-architecture, --prediction-type and --use-ema for
files whose keys cannot tell, and --allow-pickle for .ckpt/.pt files (checkpoints, LoRAs, embeddings). The
checks here need no torch: a pickle without permission, a missing file or an unknown architecture answers at
once, before any model loads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from latentforge.models.folder_checks import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX
from latentforge.resources import architecture_dir

PREDICTION_TYPES = ("epsilon", "v_prediction")
# from_single_file's options that only a checkpoint file takes -> their flags
FILE_ONLY_FLAGS = {
    "architecture": "--model-architecture",
    "prediction_type": "--prediction-type",
    "use_ema": "--use-ema",
}


def add_single_file_arguments(parser: argparse.ArgumentParser, model_flag: str = "--model") -> None:
    """--model-architecture, --prediction-type, --use-ema (for a single-file `model_flag`) and --allow-pickle."""
    group = parser.add_argument_group(f"single-file checkpoints ({model_flag} FILE.safetensors) and pickles")
    group.add_argument(
        "--model-architecture",
        metavar="NAME",
        help="the file's architecture (a name in configs/models/, e.g. sd21, or a folder of configs) where its "
        "keys cannot tell (default: the one that fits them).",
    )
    group.add_argument(
        "--prediction-type",
        choices=PREDICTION_TYPES,
        help="what the file's U-Net predicts (default: its metadata's, else the architecture's).",
    )
    group.add_argument(
        "--use-ema", action="store_true", default=None, help="read the file's EMA copy of the U-Net."
    )
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        default=None,
        help="open .ckpt/.pt checkpoints, LoRAs and embeddings (pickles can run code: only from a source you "
        "trust; read with torch.load(weights_only=True)).",
    )


def check_single_file(model: str, options: dict[str, Any], flag: str = "--model") -> None:
    """ValueError when `model` is a file we may not read as given, or when the single-file options are given
    for a model folder (they would be ignored)."""
    if (options.get("prediction_type") or None) not in (None, *PREDICTION_TYPES):
        raise ValueError(
            f"--prediction-type must be one of {PREDICTION_TYPES}, got {options['prediction_type']!r}"
        )
    if Path(model).is_file():
        check_pickle(model, flag, options.get("allow_pickle", False))
        if options.get("architecture"):
            try:
                architecture_dir(options["architecture"])
            except FileNotFoundError as err:
                raise FileNotFoundError(f"--model-architecture: {err}") from None
        return
    given = ", ".join(flag_name for name, flag_name in FILE_ONLY_FLAGS.items() if options.get(name))
    if given:
        raise ValueError(f"{given}: only for a single-file checkpoint, and {flag} {model} is a folder")


def check_pickle(path: str | Path, flag: str, allow_pickle: bool) -> None:
    """ValueError naming `flag` and the fix when the file `path` is a pickle without `allow_pickle`, or neither
    a .safetensors file nor a pickle. (`models.weight_files` checks the same when it opens the file, after torch
    has loaded; this answers before.)"""
    suffix = Path(path).suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ValueError(
            f"{flag}: {path} is a pickle ({suffix}), which can run code when opened; pass --allow-pickle if you "
            "trust its source, or convert it to .safetensors"
        )
    if suffix != SAFETENSORS_SUFFIX and suffix not in PICKLE_SUFFIXES:
        raise ValueError(
            f"{flag}: {path} is not a {SAFETENSORS_SUFFIX} file (nor, with --allow-pickle, one of {', '.join(PICKLE_SUFFIXES)})"
        )
