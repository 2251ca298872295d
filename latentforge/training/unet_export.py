"""The U-Net trainer's export: a full diffusers folder (`output_dir/model/`) or the LoRA files
(`output_dir/lora/`), each with the run's training settings in its safetensors headers and a model card;
written beside its place and renamed into it when complete."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from accelerate import Accelerator

from latentforge.atomic_files import staged_folder
from latentforge.data.training_data import data_note
from latentforge.models.components import Components
from latentforge.training.lora import save_lora
from latentforge.training.model_card import write_model_card
from latentforge.training.sharding import full_copy
from latentforge.training.training_metadata import add_header_metadata, training_metadata


def export_unet_run(
    accelerator: Accelerator,
    components: Components,
    config,
    run,
    metrics: dict,
    images: tuple[int, int],
) -> Path:
    """Write the export on the main process (collective: every process waits); returns its folder.
    images: (training or instance images, class images of prior preservation)."""
    out = run.dir.lora if config.lora.rank else run.dir.model
    if not config.lora.rank:  # FSDP: the whole weights gathered from every process's shards (collective)
        trained = ("unet", "text_encoder") if config.train_text_encoder else ("unet",)
        gathered = {
            name: full_copy(getattr(components, name), accelerator.is_main_process) for name in trained
        }
        components = dataclasses.replace(components, **gathered)
    if accelerator.is_main_process:
        components.unet.eval()
        metadata = training_metadata(config, metrics, *images)
        prediction_type = components.scheduler.config.get("prediction_type", "epsilon")
        with staged_folder(out) as staging:  # whole or absent: a kill or a full disk keeps the earlier export
            if config.lora.rank:
                title = f"latentforge LoRA (rank {config.lora.rank}) for {config.base}"
                text_encoder = components.text_encoder if config.lora.text_encoder else None
                save_lora(components.unet, staging, text_encoder, prediction_type, title, training=metadata)
            else:
                components.save_pretrained(staging, overwrite=True)
                title = "latentforge text-to-image model"
                for part in ("unet", "text_encoder") if config.train_text_encoder else ("unet",):
                    for file in (staging / part).glob("*.safetensors"):
                        add_header_metadata(file, metadata)
            write_model_card(staging, title, run.dir.config, _data_note(config, images), metrics)
        accelerator.print(f"exported {out}")
    accelerator.wait_for_everyone()
    return out


def _data_note(config, images: tuple[int, int]) -> str:
    db = config.dreambooth
    if not db.instance_data:
        return data_note(config.data, images[0])
    note = f"DreamBooth: {images[0]} photo(s) captioned {db.instance_prompt!r}"
    if images[1]:
        note += f", with {images[1]} class image(s) of {db.class_prompt!r} (prior_loss_weight {db.prior_loss_weight})"
    return note + f". Resolution {config.data.resolution}, buckets={config.data.buckets}."
