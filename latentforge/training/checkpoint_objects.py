"""The objects a checkpoint holds beside accelerate's state (EMA, LR schedulers: anything with state_dict /
load_state_dict), kept out of pickles: their tensors in objects.safetensors, the rest in objects.json; and a
view of older checkpoints without accelerate's custom_checkpoint_N.pkl, which it would unpickle itself."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

OBJECTS_TENSORS, OBJECTS_JSON = "objects.safetensors", "objects.json"


def _split_tensors(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` with every tensor replaced by {"tensor": key} and stored in `tensors` (for safetensors)."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous().clone()
        return {"tensor": prefix}
    if isinstance(value, dict):
        return {"dict": {str(k): _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"list": [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(
        f"cannot checkpoint a {type(value).__name__} at {prefix} (tensors, numbers, strings only)"
    )


def _join_tensors(node: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    if "tensor" in node:
        return tensors[node["tensor"]]
    if "dict" in node:
        return {k: _join_tensors(v, tensors) for k, v in node["dict"].items()}
    if "list" in node:
        return [_join_tensors(v, tensors) for v in node["list"]]
    return node["value"]


def save_objects(objects: list[Any], folder: Path) -> None:
    """state_dict() of each object: tensors to objects.safetensors, everything else to objects.json."""
    tensors: dict[str, torch.Tensor] = {}
    tree = [_split_tensors(obj.state_dict(), str(i), tensors) for i, obj in enumerate(objects)]
    save_file(tensors, str(folder / OBJECTS_TENSORS))
    (folder / OBJECTS_JSON).write_text(json.dumps(tree))


def load_objects(objects: list[Any], folder: Path) -> None:
    """Restore what `save_objects` wrote (or, from an older checkpoint, accelerate's custom_checkpoint_N.pkl
    read with weights_only=True)."""
    if not objects:
        return
    if (folder / OBJECTS_JSON).is_file():
        tree = json.loads((folder / OBJECTS_JSON).read_text())
        if len(tree) != len(objects):
            raise ValueError(f"{folder}: holds {len(tree)} training objects, this run has {len(objects)}")
        tensors = load_file(str(folder / OBJECTS_TENSORS))
        states = [_join_tensors(node, tensors) for node in tree]
    else:
        legacy = [folder / f"custom_checkpoint_{i}.pkl" for i in range(len(objects))]
        if not all(p.is_file() for p in legacy):
            raise FileNotFoundError(f"{folder}: no {OBJECTS_JSON} (EMA and LR scheduler state)")
        states = [torch.load(p, map_location="cpu", weights_only=True) for p in legacy]
    for obj, state in zip(objects, states):
        followed = len(getattr(obj, "shadow_params", ()))
        obj.load_state_dict(state)
        if followed != len(getattr(obj, "shadow_params", ())):  # EMAModel would zip the lists silently
            raise ValueError(
                f"{folder}: its EMA follows {len(obj.shadow_params)} parameters, this run trains {followed}; "
                "resume with the trainable parameters it was saved with (e.g. the same train_encoder)"
            )


@contextmanager
def without_legacy_pickles(folder: Path):
    """`folder`, or (older checkpoints) a temporary view of it without accelerate's custom_checkpoint_N.pkl,
    which accelerate would insist on unpickling itself (weights_only=False) for registered objects."""
    legacy = list(folder.glob("custom_checkpoint_*.pkl"))
    if not legacy:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="latentforge-ckpt-") as view:
        for item in folder.iterdir():
            if item not in legacy:
                os.symlink(item.resolve(), Path(view) / item.name)
        yield Path(view)
