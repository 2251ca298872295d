"""LoRA (Hu et al. 2021) on the U-Net's attention projections via peft, saved in the diffusers LoRA format
that `pipe.load_lora_weights(folder)` reads and in kohya's format that A1111 and ComfyUI read."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from latentforge.training.stage_configs import LoRAConfig
from latentforge.training.training_metadata import add_header_metadata

KOHYA_FILE = "lora_kohya.safetensors"  # beside diffusers' file: the same LoRA for A1111 and ComfyUI


def add_lora(unet, config: LoRAConfig) -> None:
    """Freeze `unet` and add trainable adapters (B zero-initialised: training starts from the base model)."""
    from peft import LoraConfig

    if config.rank < 0:
        raise ValueError(f"lora.rank must be >= 0, got {config.rank}")
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha or config.rank,
            init_lora_weights="gaussian",
            target_modules=list(config.target_modules),
        )
    )


def add_text_encoder_lora(text_encoder, config: LoRAConfig) -> None:
    """Freeze the CLIP text encoder and add trainable adapters (adapter "default", as `save_lora` expects).

    peft's `inject_adapter_in_model` directly: transformers 5's `add_adapter` refuses peft < 0.22, and PyPI
    had no 0.22 when this was written; the adapters and their state-dict keys are the same."""
    from peft import LoraConfig, inject_adapter_in_model

    text_encoder.requires_grad_(False)
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha or config.rank,
        init_lora_weights="gaussian",
        target_modules=list(config.text_encoder_target_modules),
    )
    inject_adapter_in_model(lora_config, text_encoder, adapter_name="default")


def save_lora(
    unet,
    folder: Path,
    text_encoder=None,
    prediction_type: str = "epsilon",
    title: str = "latentforge LoRA",
    training: dict[str, str] | None = None,
) -> Path:
    """Write the adapters of a peft-adapted U-Net (and text encoder, when it has one) twice:

    - `folder/pytorch_lora_weights.safetensors`, diffusers' format with each part's adapter metadata (rank,
      alpha, target modules), without which loaders assume alpha = rank: the wrong scale;
    - `folder/lora_kohya.safetensors`, kohya/A1111 keys with `.alpha` tensors and kohya's header metadata
      (`ss_network_dim`, `ss_network_alpha`, `ss_base_model_version`, `modelspec.*`), for A1111 and ComfyUI.

    `training`: header keys describing the run (kohya's `ss_*`, see `training_metadata`), written into both.
    Returns the diffusers file.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from latentforge.models.lora_files import to_kohya

    parts = {"unet": unet}
    if text_encoder is not None and "default" in getattr(text_encoder, "peft_config", {}):
        parts["text_encoder"] = text_encoder
    layers = {name: get_peft_model_state_dict(model) for name, model in parts.items()}
    configs = {name: model.peft_config["default"] for name, model in parts.items()}
    text_layers = layers.get("text_encoder")
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=convert_state_dict_to_diffusers(layers["unet"]),
        text_encoder_lora_layers=(
            {f"text_model.{k}": v for k, v in text_layers.items()} if text_layers else None
        ),
        unet_lora_adapter_metadata=configs["unet"].to_dict(),
        text_encoder_lora_adapter_metadata=configs["text_encoder"].to_dict() if text_layers else None,
        safe_serialization=True,
    )
    peft_layers = {f"{name}.{k}": v for name, part in layers.items() for k, v in part.items()}
    alphas = {name: config.lora_alpha for name, config in configs.items()}
    metadata = kohya_metadata(
        configs["unet"], unet, prediction_type, title, trains_text_encoder=len(parts) > 1
    )
    save_file(to_kohya(peft_layers, alphas), folder / KOHYA_FILE, metadata={**(training or {}), **metadata})
    diffusers_file = folder / "pytorch_lora_weights.safetensors"
    if training:
        add_header_metadata(diffusers_file, training)
    return diffusers_file


def kohya_metadata(
    config, unet, prediction_type: str, title: str, trains_text_encoder: bool
) -> dict[str, str]:
    """kohya sd-scripts' header keys of a LoRA, so A1111, ComfyUI and model sites show rank, alpha and base."""
    from latentforge.models.modelspec import modelspec

    v2 = unet.config.cross_attention_dim == 1024  # SD 2.x's OpenCLIP-H width, as kohya and A1111 tell them
    v_prediction = prediction_type == "v_prediction"
    pixels = unet.config.sample_size * 8
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.r),
        "ss_network_alpha": str(float(config.lora_alpha)),
        "ss_base_model_version": f"sd_{'v2' if v2 else 'v1'}{'_v' if v_prediction else ''}",
        "ss_v2": str(v2),
        "ss_network_train_unet_only": str(not trains_text_encoder),
        "ss_training_comment": "trained with latentforge",
        **modelspec(v2, prediction_type, pixels, title, adapter="lora"),
    }
