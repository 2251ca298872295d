"""Find the networks a trainer starts from: a component of a trained model folder (weights) or of an
architecture (`configs/models/<name>`, config only: random weights, seeded)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from transformers import CLIPTextModel, CLIPTokenizer

from latentforge.models.tokenizer import load_tokenizer
from latentforge.resources import architecture_dir


def component_folder(source: str | os.PathLike, component: str) -> Path:
    """`source/component` (a model or architecture folder, or an architecture name), or `source` itself when
    it is that component's folder (has config.json); FileNotFoundError naming what was looked for."""
    path = Path(source)
    if not path.is_dir():
        path = architecture_dir(source)  # raises FileNotFoundError listing the known names
    config_name = "tokenizer_config.json" if component == "tokenizer" else "config.json"
    for candidate in (path / component, path):
        if (candidate / config_name).is_file() or (
            component == "tokenizer" and (candidate / "vocab.json").is_file()
        ):
            return candidate
    raise FileNotFoundError(
        f"{source}: no {component}/ folder with {config_name} (give a model folder, an architecture name, or "
        f"the {component} folder itself)"
    )


def has_weights(folder: Path) -> bool:
    """True when `folder` holds safetensors weights (a trained component, not just an architecture)."""
    return any(folder.glob("*.safetensors"))


def load_vae(source: str | os.PathLike, seed: int = 0) -> AutoencoderKL:
    """Trained VAE of `source`, or a seeded random one when `source` is an architecture."""
    folder = component_folder(source, "vae")
    if has_weights(folder):
        return AutoencoderKL.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL.from_config(config)


def load_text_encoder(source: str | os.PathLike) -> tuple[CLIPTextModel, CLIPTokenizer]:
    """Trained CLIP text encoder and tokenizer of `source` (a model folder, e.g. the CLIP trainer's export)."""
    folder = component_folder(source, "text_encoder")
    if not has_weights(folder):
        raise FileNotFoundError(
            f"text_encoder_from={source}: {folder} has no weights; train one (`latentforge train clip`) or give a "
            "model folder with a trained text_encoder/"
        )
    return CLIPTextModel.from_pretrained(folder), load_tokenizer(component_folder(source, "tokenizer"))
