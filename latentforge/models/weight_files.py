"""Open the weight files people share (checkpoints, LoRAs, embeddings) safely: `.safetensors` by default;
pickles (`.ckpt`, `.pt`, `.pth`, `.bin`) only when the caller allows them, and then only through
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.

A `WeightFile` reads the safetensors header first (names, shapes, metadata), so a file can be checked
before any tensor is read; a truncated or corrupt file fails there with an error that names it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from latentforge.models.folder_checks import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX


def cast_floating(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`state` with its floating-point tensors cast to `dtype` (integer buffers such as position ids kept)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def check_weight_file(path: str | os.PathLike, allow_pickle: bool = False, what: str = "weights") -> Path:
    """`path` as a Path when it is a file we may read; FileNotFoundError or ValueError naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ValueError(
            f"{path} is a pickle ({suffix}): opening it can run any code stored in it. Convert it to "
            ".safetensors, or if you trust its source pass allow_pickle=True (--allow-pickle); it is then read "
            "with torch.load(weights_only=True)"
        )
    if suffix != SAFETENSORS_SUFFIX and suffix not in PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: unknown {what} file type {suffix!r}; expected {SAFETENSORS_SUFFIX} "
            f"(or, with allow_pickle=True, one of {', '.join(PICKLE_SUFFIXES)})"
        )
    return path


class WeightFile:
    """One weight file: `shapes` (name -> meta tensor), `metadata` (safetensors header), `load()` the tensors."""

    def __init__(self, path: str | os.PathLike, allow_pickle: bool = False, what: str = "weights"):
        self.path = check_weight_file(path, allow_pickle, what)
        self.metadata: dict[str, str] = {}
        self._tensors: dict | None = None
        if self.path.suffix.lower() == SAFETENSORS_SUFFIX:
            self.shapes = self._read_header()
        else:
            self._tensors = _load_pickle(self.path)
            self.shapes = {k: _meta_like(v) for k, v in self._tensors.items()}

    def load(self) -> dict:
        """All entries, tensors on the CPU (nested dicts of a pickle as they were)."""
        if self._tensors is not None:
            return dict(self._tensors)
        from safetensors.torch import load_file

        return load_file(self.path)

    def _read_header(self) -> dict:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(self.path, framework="pt") as handle:
                self.metadata = dict(handle.metadata() or {})
                names = list(handle.keys())
                return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in names}
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{self.path} is not a readable safetensors file ({err}): it is truncated or corrupt; "
                "download or export it again"
            ) from err


def _load_pickle(path: Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise ValueError(
            f"{path}: torch.load(weights_only=True) could not read it ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); it is truncated, or holds Python objects besides "
            "tensors. Convert it to .safetensors with the tool that made it"
        ) from err
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # Lightning checkpoints nest the weights
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a dict of tensors")
    return data


def _meta_like(value):
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, device="meta")
    return value
