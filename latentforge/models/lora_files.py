"""LoRA files as people share them, for the U-Net and the CLIP text encoder of SD 1.x/2.x models:

- diffusers/peft: `unet.<module>.lora_A.weight` / `lora_B` (and `text_encoder.`), what diffusers' training
  scripts and ours write, with the adapter's rank, alpha and targets in the header (`lora_adapter_metadata`);
- kohya/A1111: `lora_unet_<module_with_underscores>.lora_down.weight` / `lora_up` / `.alpha` (`lora_te_` for
  the text encoder), what kohya's sd-scripts write and A1111 and ComfyUI read. Scale = alpha / rank.

Reading converts with diffusers' own code (`lora_state_dict`, peft's key conversions); writing kohya files
with diffusers' `convert_state_dict_to_kohya`. LyCORIS and other formats are refused by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from latentforge.models.weight_files import WeightFile

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
DIFFUSERS_PREFIXES = ("unet.", "text_encoder.")
# key pattern -> the format it belongs to; latentforge (and diffusers' SD loader) read plain LoRA only
UNSUPPORTED = {
    r"\.hada_w1": "LyCORIS LoHa",
    r"\.lokr_w1": "LyCORIS LoKr",
    r"\.lora_mid\.": "LyCORIS LoCon with a Tucker core (lora_mid)",
    r"\.oft_": "OFT / BOFT",
    r"dora_scale|lora_magnitude_vector": "DoRA",
    r"\.diff(_b)?$": "LyCORIS full (weight difference)",
    r"\.ia3_|\.on_input$": "IA3",
}


def read_lora(path: str | os.PathLike, allow_pickle: bool = False) -> tuple[dict, dict | None, dict | None]:
    """(diffusers state dict, network alphas or None, adapter metadata or None) of a LoRA file, with the format
    checked from the header before the tensors are read."""
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY

    weights = WeightFile(path, allow_pickle, what="LoRA")
    lora_format(list(weights.shapes), weights.path)
    raw = (weights.metadata or {}).get(LORA_ADAPTER_METADATA_KEY)  # the header WeightFile has read
    metadata = json.loads(raw) if raw else None
    tensors = {k: v for k, v in weights.load().items() if isinstance(v, torch.Tensor)}
    try:
        state, alphas = StableDiffusionPipeline.lora_state_dict(tensors)  # kohya -> diffusers keys, alphas
    except (KeyError, ValueError) as err:
        raise ValueError(
            f"{weights.path}: diffusers could not convert its LoRA keys ({type(err).__name__}: {err}); the file is "
            "incomplete or of another format"
        ) from err
    return state, alphas, metadata


def lora_format(keys: list[str], path: Path | str = "LoRA") -> str:
    """ "kohya" or "diffusers"; ValueError naming the format of anything else."""
    for pattern, name in UNSUPPORTED.items():
        found = next((k for k in keys if re.search(pattern, k)), None)
        if found:
            raise ValueError(
                f"{path} is a {name} file ({found}), which latentforge does not read: only plain LoRA "
                "(kohya lora_down/lora_up, or diffusers/peft lora_A/lora_B) is supported"
            )
    if keys and all(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if keys and all(k.startswith(DIFFUSERS_PREFIXES) and "lora" in k for k in keys):
        return "diffusers"
    odd = next(
        (k for k in keys if not k.startswith(KOHYA_PREFIXES + DIFFUSERS_PREFIXES)), keys[:1] or ["none"]
    )
    raise ValueError(
        f"{path} is not a LoRA file latentforge reads (key {odd!r}): expected kohya/A1111 keys "
        f"({', '.join(KOHYA_PREFIXES)}...) or diffusers/peft keys (unet.*, text_encoder.* with lora_A/lora_B)"
    )


def peft_keys(state: dict, part: str, model: torch.nn.Module) -> dict:
    """The `part` ("unet" / "text_encoder") entries of a diffusers LoRA state dict in peft naming, as
    diffusers converts them before peft loads them."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    own = {k.removeprefix(f"{part}."): v for k, v in state.items() if k.startswith(f"{part}.")}
    if not own:
        return {}
    if part == "unet":
        return own if "lora_A" in next(iter(own)) else convert_unet_state_dict_to_peft(own)
    own = convert_state_dict_to_peft(convert_state_dict_to_diffusers(own))
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel
        own = {k.removeprefix("text_model."): v for k, v in own.items()}
    return own


def check_fit(state: dict, modules: dict[str, torch.nn.Module], path: Path | str = "LoRA") -> None:
    """ValueError naming the first LoRA key that has no layer in `modules` or whose shape does not fit it."""
    stray = next((k for k in state if not k.startswith(DIFFUSERS_PREFIXES)), None)
    if stray:
        raise ValueError(
            f"{path}: {stray} targets {stray.split('.')[0]}, which SD 1.x/2.x models do not have (a LoRA for "
            "another architecture, e.g. SDXL)"
        )
    for part, model in modules.items():
        for key, value in peft_keys(state, part, model).items():
            problem = _misfit(key, value, model)
            if problem:
                raise ValueError(
                    f"{path} does not fit this model (a LoRA for another architecture?): {part}.{key} {problem}"
                )


def _misfit(key: str, value: torch.Tensor, model: torch.nn.Module) -> str | None:
    module_path, _, kind = key.rpartition(".lora_")
    if not kind.startswith(("A.", "B.")):
        return None
    try:
        layer = model.get_submodule(module_path)
    except AttributeError:
        return f"names a layer {module_path} this model does not have"
    layer = getattr(layer, "base_layer", layer)  # already wrapped by peft for another adapter
    size_in = getattr(layer, "in_features", getattr(layer, "in_channels", None))
    size_out = getattr(layer, "out_features", getattr(layer, "out_channels", None))
    wanted, given = (size_in, value.shape[1]) if kind.startswith("A.") else (size_out, value.shape[0])
    if value.ndim < 2 or wanted != given:
        side = "inputs" if kind.startswith("A.") else "outputs"
        return f"has shape {tuple(value.shape)}, but {module_path} has {wanted} {side}"
    return None


def to_kohya(layers: dict[str, torch.Tensor], alphas: dict[str, float]) -> dict[str, torch.Tensor]:
    """kohya/A1111 tensors of peft LoRA layers keyed `unet.<module>.lora_A.weight` / `text_encoder.<module>...`:
    diffusers' `convert_state_dict_to_kohya`, with SD 1.x/2.x's `lora_te_` prefix (diffusers writes SDXL's
    `lora_te1_`), the text encoder's `text_model.` path, and each part's alpha (`alphas["unet"]`, ...)."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    renamed = {}
    for key, value in layers.items():
        if key.startswith("text_encoder.") and not key.startswith("text_encoder.text_model."):
            key = "text_encoder.text_model." + key.removeprefix("text_encoder.")
        renamed[key] = value.detach().float().cpu().contiguous()
    kohya = {}
    for key, value in convert_state_dict_to_kohya(renamed).items():
        key = key.replace("lora_te1_", "lora_te_", 1)
        if key.endswith(".alpha"):
            value = torch.tensor(float(alphas["unet" if key.startswith("lora_unet_") else "text_encoder"]))
        kohya[key] = value
    return kohya


def lora_short_hash(path: str | os.PathLike, skip_header: bool = True) -> str:
    """A1111's LoRA hash: SHA-256 of a safetensors file's bytes after its header, first 12 hex digits (what
    its infotext shows as `Lora hashes`); with skip_header=False, of the whole file (A1111's `TI hashes`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if skip_header and Path(path).suffix.lower() == ".safetensors":
            handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
