"""Textual-inversion embeddings as people share them (Gal et al. 2022, "An Image is Worth One Word"):

- A1111 `.safetensors`: `{"emb_params": (n, dim)}`;
- A1111 `.pt` (a pickle: read only with allow_pickle): `{"string_to_param": {"*": (n, dim)}, "name": ...}`;
- diffusers `learned_embeds.safetensors`: `{token: (dim,) or (n, dim)}`.

A1111 names the token after the file (its stem); diffusers files carry their token. Loading into a text
encoder is diffusers' `load_textual_inversion` (see `pipelines.adapters`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from latentforge.models.weight_files import WeightFile


def read_embedding(path: str | os.PathLike, allow_pickle: bool = False) -> tuple[str, torch.Tensor]:
    """(token the file implies, vectors (n, dim) or (dim,)) of an embedding file."""
    weights = WeightFile(path, allow_pickle, what="embedding")
    data = weights.load()
    stem = Path(path).stem
    if "emb_params" in data:
        return stem, _vectors(data["emb_params"], path)
    if "string_to_param" in data:
        params = data["string_to_param"]
        return stem, _vectors(params.get("*") if isinstance(params, dict) else None, path)
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if {"clip_l", "clip_g"} & set(tensors):
        raise ValueError(
            f"{path} is an SDXL embedding (clip_l/clip_g); SD 1.x/2.x text encoders take one vector set"
        )
    if len(tensors) == 1:
        token, vectors = next(iter(tensors.items()))
        return token, _vectors(vectors, path)
    raise ValueError(
        f"{path} is not a textual-inversion embedding: expected emb_params (A1111 .safetensors), string_to_param "
        f"(A1111 .pt) or a single token -> vectors entry (diffusers); found {sorted(data)[:5]}"
    )


def _vectors(value, path) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim not in (1, 2):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{path}: embedding vectors must have shape (n, dim) or (dim,), got {shape}")
    return value.detach().float()
