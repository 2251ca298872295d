"""What the U-Net trainer trains: the U-Net (whole, or LoRA adapters) and, when asked, the text encoder (whole
with train_text_encoder, or its adapters with lora.text_encoder), each with its parameter group."""

from __future__ import annotations

from latentforge.models.components import Components
from latentforge.training.lora import add_lora, add_text_encoder_lora


def trains_text_encoder(config) -> bool:
    """Whether the text encoder trains beside the U-Net (wholly, or its LoRA adapters)."""
    return config.train_text_encoder or bool(config.lora.rank and config.lora.text_encoder)


def trained_models(components: Components, config) -> tuple[list, list[dict]]:
    """The U-Net (LoRA-adapted if lora.rank), and the text encoder when it trains too (fully, or its adapters
    with lora.text_encoder), set up for training; and their parameter groups (the text encoder's with its own
    learning rate)."""
    unet, text_encoder = components.unet, components.text_encoder
    if config.lora.rank:
        add_lora(unet, config.lora)
    text_trains = trains_text_encoder(config)
    if config.lora.rank and config.lora.text_encoder:
        add_text_encoder_lora(text_encoder, config.lora)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if text_trains:
            text_encoder.gradient_checkpointing_enable()
    unet.train()
    groups = [{"params": [p for p in unet.parameters() if p.requires_grad]}]
    if not text_trains:
        return [unet], groups
    text_encoder.train()
    lr = config.lora.text_encoder_lr or config.text_encoder_lr or config.optim.learning_rate
    params = [p for p in text_encoder.parameters() if p.requires_grad]
    return [unet, text_encoder], [*groups, {"params": params, "lr": lr}]
