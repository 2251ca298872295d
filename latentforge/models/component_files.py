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
from latentforge.models.weight_files import cast_floating
from latentforge.resources import architecture_dir


def component_folder(source: str | os.PathLike, component: str) -> Path:
    """`source/component` (a model or architecture folder, or an architecture name), or `source` itself when
    it is that component's folder (has config.json); FileNotFoundError naming what was looked for."""
    path = architecture_dir(source)  # the folder as given, else a shipped one; FileNotFoundError otherwise
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


def load_network(model_cls, folder: Path, dtype: torch.dtype | None):
    """`model_cls` built from `folder/config.json` with no weights (meta device) and given the weights of its one
    safetensors file, read once; anything else (sharded, .bin, old key names) goes through `from_pretrained`."""
    weights = folder / "diffusion_pytorch_model.safetensors"
    model = _assign_weights(model_cls, folder, weights, dtype or torch.float32) if weights.is_file() else None
    if model is None:
        return model_cls.from_pretrained(folder, **({"dtype": dtype} if dtype is not None else {}))
    model.register_to_config(_name_or_path=folder)  # as from_pretrained records it
    return model.eval()


def _assign_weights(model_cls, folder: Path, weights: Path, dtype: torch.dtype):
    """The model with the file's tensors (cast to `dtype`) as its parameters, or None when they do not fit."""
    from safetensors.torch import load_file

    with torch.device("meta"):
        model = model_cls.from_config(json.loads((folder / "config.json").read_text()))
    state = cast_floating(load_file(weights), dtype)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:  # keys of an older diffusers layout: its converters live in from_pretrained
        return None
    return None if any(t.is_meta for t in (*model.parameters(), *model.buffers())) else model
