"""Read a single-file Stable Diffusion 1.x/2.x checkpoint in the original (LDM/CompVis) layout, the files A1111,
ComfyUI and model-sharing sites use: `model.diffusion_model.*`, `first_stage_model.*` and
`cond_stage_model.transformer.*` (OpenAI CLIP, SD 1.x) or `cond_stage_model.model.*` (OpenCLIP, SD 2.x).

No network: the architecture is the one of `configs/models/` whose U-Net, VAE and text encoder take exactly the
file's keys and shapes (found from the header, before any weight is read). The key conversion is diffusers'
own (`diffusers.loaders.single_file_utils`). What the keys cannot tell (v-prediction, the native resolution)
comes from the file's `modelspec.*` metadata when it has them, else from `architecture=` / `prediction_type=`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from latentforge.models.weight_files import WeightFile, cast_floating
from latentforge.resources import architecture_dir, configs_root, shipped_names

UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "cond_stage_model.transformer."  # SD 1.x: transformers' CLIPTextModel keys
OPEN_CLIP_PREFIX = "cond_stage_model.model."  # SD 2.x: open_clip's text tower keys
SCHEDULER_KEY = "latentforge.scheduler_config"  # our exports keep the whole noise schedule here
PREDICTION_TYPES = {"epsilon": "epsilon", "v": "v_prediction", "v_prediction": "v_prediction"}


def text_encoder_prefix(text_config: dict) -> str:
    """Where a text encoder lives in a single file: OpenCLIP towers (GELU, SD 2.x) under `cond_stage_model.model.`,
    OpenAI CLIP (quick-GELU, SD 1.x) under `cond_stage_model.transformer.`: what A1111 and ComfyUI expect."""
    return OPEN_CLIP_PREFIX if text_config.get("hidden_act") == "gelu" else CLIP_PREFIX


def read_configs(arch: Path) -> dict[str, dict]:
    """The unet, vae, text_encoder and scheduler configs of an architecture folder."""
    names = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json"}
    configs = {name: json.loads((arch / name / file).read_text()) for name, file in names.items()}
    configs["scheduler"] = json.loads((arch / "scheduler" / "scheduler_config.json").read_text())
    return configs


def convert_checkpoint(checkpoint: dict, configs: dict[str, dict], use_ema: bool = False) -> dict[str, dict]:
    """The diffusers state dicts {"unet", "vae", "text_encoder"} of an LDM checkpoint (diffusers' converters)."""
    from diffusers.loaders import single_file_utils as sfu

    unet = sfu.convert_ldm_unet_checkpoint(checkpoint, configs["unet"], extract_ema=use_ema)
    vae = sfu.convert_ldm_vae_checkpoint(checkpoint, configs["vae"])
    if text_encoder_prefix(configs["text_encoder"]) == OPEN_CLIP_PREFIX:
        hidden = configs["text_encoder"]["hidden_size"]
        holder = type("Config", (), {"config": type("C", (), {"hidden_size": hidden})})
        text = sfu.convert_open_clip_checkpoint(holder, checkpoint, prefix=OPEN_CLIP_PREFIX)
    else:
        text = sfu.convert_ldm_clip_checkpoint(checkpoint)
    # transformers 5 flattened CLIPTextModel (no `text_model.`); position_ids is a buffer it makes itself.
    text = {k.removeprefix("text_model."): v for k, v in text.items() if not k.endswith("position_ids")}
    return {"unet": unet, "vae": vae, "text_encoder": text}


def empty_modules(configs: dict[str, dict]) -> dict[str, torch.nn.Module]:
    """U-Net, VAE and text encoder of `configs` with parameters on the meta device (no memory, no init)."""
    from accelerate import init_empty_weights

    text_config = {k: v for k, v in configs["text_encoder"].items() if not k.startswith("_")}
    text_config.pop("architectures", None)
    with init_empty_weights():
        return {
            "unet": UNet2DConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKL.from_config(configs["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**text_config)),
        }


def first_mismatch(converted: dict[str, dict], modules: dict[str, torch.nn.Module]) -> str | None:
    """None when every module gets exactly its parameters with their shapes, else the first difference."""
    for name, module in modules.items():
        expected = {
            k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith("position_ids")
        }
        given = {k: tuple(v.shape) for k, v in converted[name].items() if v is not None}
        missing = sorted(set(expected) - set(given))
        if missing:
            return f"{name}: no weights for {missing[0]} ({len(missing)} missing)"
        extra = sorted(set(given) - set(expected))
        if extra:
            return f"{name}: {extra[0]} has no place in this architecture ({len(extra)} extra)"
        for key, shape in expected.items():
            if given[key] != shape:
                return f"{name}: {key} has shape {given[key]}, the architecture's is {shape}"
    return None


def has_ema(checkpoint: dict) -> bool:
    """True when the file holds an EMA copy of the U-Net (`model_ema.*`, as diffusers decides it)."""
    return sum(k.startswith("model_ema") for k in checkpoint) > 100


def find_architecture(
    weights: WeightFile, architecture: str | os.PathLike | None = None, use_ema: bool = False
) -> tuple[Path, dict[str, dict], dict[str, torch.nn.Module]]:
    """(architecture folder, its configs, its modules on the meta device) whose modules take exactly the file's
    keys and shapes; ValueError naming the option to pass when none or several fit. Reads only the header."""
    shapes = weights.shapes
    if use_ema and not has_ema(shapes):
        raise ValueError(f"{weights.path} has no EMA weights (model_ema.*); drop use_ema")
    if architecture is not None:
        arch = architecture_dir(architecture)
        configs = read_configs(arch)
        modules = empty_modules(configs)
        problem = first_mismatch(convert_checkpoint(shapes, configs, use_ema), modules)
        if problem:
            raise ValueError(f"{weights.path} does not fit architecture {architecture!s}: {problem}")
        return arch, configs, modules
    fits, problems = [], {}
    for name, configs in _candidates(shapes):
        modules = empty_modules(configs)
        problem = first_mismatch(convert_checkpoint(shapes, configs, use_ema), modules)
        if problem:
            problems[name] = problem
        else:
            fits.append((name, configs, modules))
    fits = _narrow_by_metadata(fits, weights.metadata)
    if len(fits) == 1:
        name, configs, modules = fits[0]
        return configs_root() / "models" / name, configs, modules
    raise ValueError(_no_single_fit(weights.path, shapes, fits, problems))


def _candidates(shapes: dict) -> list[tuple[str, dict[str, dict]]]:
    """(name, configs) of the shipped architectures whose first U-Net convolution and text-encoder layout
    match the file's."""
    conv_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        return []
    found = []
    for name in shipped_names("models"):
        configs = read_configs(configs_root() / "models" / name)
        unet, prefix = configs["unet"], text_encoder_prefix(configs["text_encoder"])
        if tuple(conv_in.shape[:2]) == (unet["block_out_channels"][0], unet["in_channels"]) and any(
            k.startswith(prefix) for k in shapes
        ):
            found.append((name, configs))
    return found


def _narrow_by_metadata(fits: list, metadata: dict[str, str]) -> list:
    """Among architectures that fit the keys, those that agree with the file's modelspec prediction type and
    resolution (kohya and latentforge write them; most files have none)."""
    prediction = PREDICTION_TYPES.get(metadata.get("modelspec.prediction_type", ""))
    resolution = metadata.get("modelspec.resolution", "")
    narrowed = [
        (name, configs, modules)
        for name, configs, modules in fits
        if (prediction is None or configs["scheduler"].get("prediction_type", "epsilon") == prediction)
        and (not resolution or resolution == f"{_pixels(configs)}x{_pixels(configs)}")
    ]
    return narrowed or fits


def _pixels(configs: dict[str, dict]) -> int:
    return configs["unet"]["sample_size"] * 2 ** (len(configs["vae"]["block_out_channels"]) - 1)


def _no_single_fit(path: Path, shapes: dict, fits: list, problems: dict[str, str]) -> str:
    if fits:
        described = ", ".join(
            f"{name} ({c['scheduler'].get('prediction_type', 'epsilon')}, {_pixels(c)} px)"
            for name, c, _ in fits
        )
        return (
            f"{path} fits several architectures that its keys cannot tell apart: {described}. Pass "
            f"architecture=NAME (one of {[fit[0] for fit in fits]}); for v-prediction or epsilon alone, "
            "prediction_type= also works with the right architecture"
        )
    if not any(k.startswith(UNET_PREFIX) for k in shapes):
        first = next(iter(shapes), "nothing")
        return (
            f"{path} is not a Stable Diffusion 1.x/2.x single-file checkpoint: no {UNET_PREFIX}* keys "
            f"(first key: {first}); a LoRA or embedding goes to load_lora_weights / load_textual_inversion"
        )
    tried = "; ".join(f"{name}: {p}" for name, p in problems.items()) or "none has its first layers"
    return (
        f"{path}: no architecture in configs/models/ fits its keys and shapes ({tried}). Pass "
        "architecture=FOLDER with the config files of its U-Net, VAE and text encoder"
    )


def load_single_file(
    path: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    architecture: str | os.PathLike | None = None,
    prediction_type: str | None = None,
    use_ema: bool = False,
    allow_pickle: bool = False,
) -> tuple[dict[str, torch.nn.Module], Path, dict]:
    """({"unet", "vae", "text_encoder"} modules with the file's weights, architecture folder, scheduler config)."""
    if prediction_type not in (None, "epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    weights = WeightFile(path, allow_pickle, what="checkpoint")
    arch, configs, modules = find_architecture(
        weights, architecture, use_ema
    )  # checks before reading weights
    scheduler = json.loads(weights.metadata.get(SCHEDULER_KEY, "null")) or configs["scheduler"]
    if prediction_type:
        scheduler = {**scheduler, "prediction_type": prediction_type}
    dtype = torch_dtype or torch.float32
    converted = convert_checkpoint(weights.load(), configs, use_ema)
    for name, module in modules.items():
        module.load_state_dict(
            cast_floating(converted[name], dtype), strict=False, assign=True
        )  # exact fit checked above
        module.eval()
    return modules, arch, scheduler
