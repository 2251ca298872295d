"""Write a model as one `.safetensors` checkpoint in the original (LDM/CompVis) layout that A1111, ComfyUI and
diffusers' `from_single_file` read.

diffusers reads this layout but has no writer in its package: the key maps below are those of its
`scripts/convert_diffusers_to_original_stable_diffusion.py`, generalised from SD's fixed four blocks to any
block count (the same numbering diffusers' reader, `convert_ldm_unet_checkpoint`, undoes). The tests read
every file we write back with diffusers' reader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from latentforge.atomic_files import staged_file
from latentforge.models.modelspec import modelspec
from latentforge.models.single_file import CLIP_PREFIX, OPEN_CLIP_PREFIX, SCHEDULER_KEY, text_encoder_prefix

UNET_RESNET_NAMES = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
VAE_ATTENTION_NAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
OPEN_CLIP_NAMES = (
    ("encoder.layers.", "transformer.resblocks."),
    (".self_attn.", ".attn."),
    (".layer_norm1.", ".ln_1."),
    (".layer_norm2.", ".ln_2."),
    (".mlp.fc1.", ".mlp.c_fc."),
    (".mlp.fc2.", ".mlp.c_proj."),
    ("embeddings.token_embedding.weight", "token_embedding.weight"),
    ("embeddings.position_embedding.weight", "positional_embedding"),
    ("final_layer_norm.", "ln_final."),
)


def unet_prefixes(config: dict) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) of every U-Net block: input_blocks count one entry per resnet (with its
    attention) plus one per downsampler; output_blocks one per resnet, the last one holding the upsampler."""
    layers = config["layers_per_block"]
    per_down, per_up = layers + 1, layers + 1
    pairs = [
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for b in range(len(config["down_block_types"])):
        for j in range(layers):
            i = 1 + b * per_down + j
            pairs += [(f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{i}.0.")]
            pairs += [(f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{i}.1.")]
        pairs += [(f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{(b + 1) * per_down}.0.op.")]
    for b, kind in enumerate(config["up_block_types"]):
        for j in range(per_up):
            pairs += [(f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{b * per_up + j}.0.")]
            pairs += [(f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{b * per_up + j}.1.")]
        upsampler = 2 if "CrossAttn" in kind else 1  # after the attention, when the block has one
        pairs += [(f"up_blocks.{b}.upsamplers.0.", f"output_blocks.{b * per_up + layers}.{upsampler}.")]
    return pairs


def vae_prefixes(config: dict) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) of the VAE blocks; LDM numbers the decoder's blocks in reverse."""
    n = len(config["down_block_types"])
    pairs = []
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.mid_block.resnets.{j}.", f"{part}.mid.block_{j + 1}.") for j in range(2)]
        pairs += [(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")]
    for i in range(n):
        pairs += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")]
        pairs += [(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")]
        pairs += [(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block.")]
        pairs += [(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")]
    return pairs


def _split(key: str, pairs: list[tuple[str, str]], part: str) -> tuple[str, str, str]:
    """(diffusers prefix, LDM prefix, rest of the key) of the block `key` belongs to."""
    for new, old in pairs:
        if key.startswith(new):
            return new, old, key[len(new) :]
    raise ValueError(
        f"{part}: {key} has no place in the single-file (LDM) layout; save a diffusers folder instead"
    )


def unet_to_ldm(state: dict, config: dict) -> dict:
    """U-Net keys in the LDM layout (without the `model.diffusion_model.` prefix)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top_level, pairs, out = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"], unet_prefixes(config), {}
    for key, value in state.items():
        if key in top_level:
            out[top_level[key]] = value
            continue
        new, old, rest = _split(key, pairs, "unet")
        if ".resnets." in new:
            for diffusers_name, ldm_name in UNET_RESNET_NAMES:
                rest = rest.replace(diffusers_name, ldm_name)
        out[old + rest] = value
    return out


def vae_to_ldm(state: dict, config: dict) -> dict:
    """VAE keys in the LDM layout (without the `first_stage_model.` prefix)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top_level, pairs, out = DIFFUSERS_TO_LDM_MAPPING["vae"], vae_prefixes(config), {}
    for key, value in state.items():
        if key in top_level:
            out[top_level[key]] = value
            continue
        new, old, rest = _split(key, pairs, "vae")
        rest = rest.replace("conv_shortcut", "nin_shortcut")
        if ".attentions." in new:
            for diffusers_name, ldm_name in VAE_ATTENTION_NAMES:
                rest = rest.replace(diffusers_name, ldm_name)
            if rest.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[old + rest] = value
    return out


def text_encoder_to_ldm(state: dict, config: dict) -> dict:
    """SD 1.x: transformers' keys under `cond_stage_model.transformer.text_model.`; SD 2.x: open_clip's, with
    q/k/v fused into `in_proj` as open_clip stores them."""
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    if text_encoder_prefix(config) == CLIP_PREFIX:
        return {f"{CLIP_PREFIX}text_model.{k}": v for k, v in state.items()}
    out, fused = {}, {}
    for key, value in state.items():
        name = key
        for new, old in OPEN_CLIP_NAMES:
            name = name.replace(new, old)
        for proj in ("q_proj", "k_proj", "v_proj"):
            if f".attn.{proj}." in name:
                head, kind = name.split(f".attn.{proj}.")
                fused.setdefault(f"{head}.attn.in_proj_{kind}", {})[proj] = value
                break
        else:
            out[OPEN_CLIP_PREFIX + name] = value
    for name, parts in fused.items():
        out[OPEN_CLIP_PREFIX + name] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def save_single_file(
    components, path: str | os.PathLike, fp16: bool = False, overwrite: bool = False
) -> Path:
    """Write `components` to `path` (.safetensors, LDM layout); written beside it and renamed into place."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"single-file checkpoints are written as .safetensors, got {path}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    state = {
        **{
            "model.diffusion_model." + k: v
            for k, v in unet_to_ldm(components.unet.state_dict(), components.unet.config).items()
        },
        **{
            "first_stage_model." + k: v
            for k, v in vae_to_ldm(components.vae.state_dict(), components.vae.config).items()
        },
        **text_encoder_to_ldm(components.text_encoder.state_dict(), components.text_encoder.config.to_dict()),
    }
    dtype = torch.float16 if fp16 else torch.float32
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in state.items()
    }
    v2 = text_encoder_prefix(components.text_encoder.config.to_dict()) == OPEN_CLIP_PREFIX
    prediction = components.scheduler.config.get("prediction_type", "epsilon")
    pixels = components.unet.config.sample_size * components.vae_scale_factor
    spec = modelspec(v2, prediction, pixels, components.name or "latentforge model")
    metadata = {**spec, SCHEDULER_KEY: json.dumps(dict(components.scheduler.config))}
    with staged_file(path) as tmp:
        save_file(state, tmp, metadata=metadata)
    return path
