"""The run's training settings in the safetensors headers of its exports, under kohya sd-scripts' `ss_*` keys,
which A1111's LoRA browser, ComfyUI and model-sharing sites read (the adapter's rank/alpha and `modelspec.*`
are written by `lora.kohya_metadata`)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file


def training_metadata(
    config: Any, summary: dict[str, Any], num_images: int, num_reg_images: int
) -> dict[str, str]:
    """`ss_*` header keys of a U-Net run: its config (`UNetTrainConfig`), the run summary (steps, seconds)
    and the images it trained on (instance/training images, and class images of prior preservation)."""
    optim, data, lora = config.optim, config.data, config.lora
    text_lr = lora.text_encoder_lr or config.text_encoder_lr or optim.learning_rate
    finished = datetime.datetime.now(datetime.timezone.utc)
    started = finished - datetime.timedelta(seconds=float(summary.get("seconds", 0.0)))
    values = {
        "ss_sd_model_name": config.base,
        "ss_learning_rate": optim.learning_rate,
        "ss_unet_lr": optim.learning_rate,
        "ss_text_encoder_lr": text_lr if (lora.text_encoder or config.train_text_encoder) else 0.0,
        "ss_optimizer": optim.name,
        "ss_lr_scheduler": "adafactor" if optim.adafactor_relative_step else optim.lr_scheduler,
        "ss_lr_warmup_steps": optim.warmup_steps,
        "ss_max_train_steps": optim.max_steps,
        "ss_steps": summary.get("steps", optim.max_steps),
        "ss_batch_size_per_device": optim.batch_size,
        "ss_gradient_accumulation_steps": optim.gradient_accumulation_steps,
        "ss_max_grad_norm": optim.max_grad_norm,
        "ss_mixed_precision": config.mixed_precision,
        "ss_seed": config.seed,
        "ss_num_train_images": num_images,
        "ss_num_reg_images": num_reg_images,
        "ss_prior_loss_weight": config.dreambooth.prior_loss_weight if num_reg_images else 0.0,
        "ss_resolution": f"({data.resolution}, {data.resolution})",
        "ss_enable_bucket": data.buckets,
        "ss_min_bucket_reso": data.min_bucket_reso or data.resolution // 2,
        "ss_max_bucket_reso": data.max_bucket_reso or data.resolution * 2,
        "ss_bucket_reso_steps": data.bucket_reso_steps,
        "ss_flip_aug": data.random_flip,
        "ss_caption_dropout_rate": config.caption_dropout,
        "ss_noise_offset": config.noise_offset,
        "ss_min_snr_gamma": config.snr_gamma,
        "ss_zero_terminal_snr": config.zero_terminal_snr,
        "ss_gradient_checkpointing": config.gradient_checkpointing,
        "ss_cache_latents": True,
        "ss_training_started_at": started.timestamp(),
        "ss_training_finished_at": finished.timestamp(),
    }
    return {key: str(value) for key, value in values.items()}  # kohya's spelling: "True", "0.0001"


def add_header_metadata(file: Path, metadata: dict[str, str]) -> None:
    """Rewrite safetensors `file` with `metadata` added to its header (its own keys kept where they clash)."""
    with safe_open(file, framework="pt") as handle:  # one read of the file: header and tensors
        existing = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    save_file(tensors, file, metadata={**metadata, **existing})
