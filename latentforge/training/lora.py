"""LoRA (Hu et al. 2021) on the U-Net's attention projections via peft, saved in the diffusers LoRA format
that `pipe.load_lora_weights(folder)` reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoRAConfig:
    """Low-rank adapters instead of full fine-tuning (rank 0 = train the whole U-Net)."""

    rank: int = 0  # adapter rank r; 0 = full training
    alpha: float = 0.0  # scale numerator (update = alpha / r * B A); 0 = rank (scale 1)
    target_modules: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"]
    )  # adapted layers


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


def save_lora(unet, folder: Path) -> Path:
    """Write `folder/pytorch_lora_weights.safetensors` (diffusers format) from a peft-adapted U-Net."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"
