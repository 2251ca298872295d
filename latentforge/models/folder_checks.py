"""Checks that need no torch and name the broken piece before anything loads: a diffusers model folder's
components and files, and the weight-file types people share (safetensors; pickles only when allowed)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (
    ".ckpt",
    ".pt",
    ".pth",
    ".bin",
)  # read only with allow_pickle, through torch.load(weights_only=True)
# `from_single_file`'s options that only a checkpoint file takes (allow_pickle also opens LoRAs and embeddings)
FILE_ONLY_OPTIONS = ("architecture", "prediction_type", "use_ema")


def single_file_options(source: Any) -> dict[str, Any]:
    """`from_single_file`'s keywords from the attributes the command line and EvalConfig share
    (model_architecture, prediction_type, use_ema, allow_pickle)."""
    return {
        "architecture": source.model_architecture or None,
        "prediction_type": source.prediction_type or None,
        "use_ema": bool(source.use_ema),
        "allow_pickle": bool(source.allow_pickle),
    }


# component -> (config file, accepted weight files, most preferred first)
EXPECTED_FILES = {
    "vae": ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "unet": ("config.json", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "text_encoder": ("config.json", ("model.safetensors", "pytorch_model.bin")),
    "tokenizer": ("tokenizer_config.json", ("tokenizer.json", "vocab.json")),
    "scheduler": ("scheduler_config.json", ()),
}


class ModelFolderError(FileNotFoundError):
    """A model folder lacks a component or a file it needs."""


def check_model_folder(root: Path) -> None:
    """Raise `ModelFolderError` naming the first missing component or file of a diffusers SD folder."""
    if not (root / "model_index.json").is_file():
        raise ModelFolderError(
            f"{root} is not a diffusers model folder: model_index.json is missing "
            "(save models with Components.save_pretrained or `latentforge export`)"
        )
    index = _check_json("model_index.json", root / "model_index.json")
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise ValueError(
            f'{root / "model_index.json"} is not a pipeline index (a JSON object with "_class_name" and one '
            "entry per component); restore it or re-export the model"
        )
    for component, (config, weights) in EXPECTED_FILES.items():
        folder = root / component
        if not folder.is_dir():
            raise ModelFolderError(f"{component}: folder {folder} is missing from the model")
        if not (folder / config).is_file():
            raise ModelFolderError(f"{component}: {folder / config} is missing")
        if weights and not any((folder / w).is_file() for w in weights):
            raise ModelFolderError(
                f"{component}: no weights in {folder} (expected one of {', '.join(weights)})"
            )
        _check_json(component, folder / config)


@contextlib.contextmanager
def loading(component: str, folder: Path) -> Iterator[None]:
    """Re-raise any failure while loading `component` as a ValueError naming it and its files."""
    try:
        yield
    except Exception as err:  # torch, safetensors and transformers each raise their own types
        files = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "none"
        raise ValueError(
            f"{component}: could not load {folder} (files: {files}); a weights or config file is corrupt or "
            f"does not match the config — restore it or re-export the model. Cause: {type(err).__name__}: {err}"
        ) from err


def _check_json(component: str, path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{component}: {path} is not valid JSON ({err}); restore or re-export it") from err
