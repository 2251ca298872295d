"""LoRA training on a tiny model: the saved adapters load with diffusers' `load_lora_weights` and change the
images; the base weights are untouched."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from pipeline_helpers import train_tiny_lora
from safetensors.torch import load_file

from latentforge.config_loader import load_config
from latentforge.training import unet as unet_trainer


def _image(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipe("a red circle", num_inference_steps=2, generator=generator, output_type="np").images[0]


def test_lora_weights_load_in_diffusers_and_change_the_output(tmp_path):
    base, lora_dir = train_tiny_lora(tmp_path)
    weights = load_file(lora_dir / "pytorch_lora_weights.safetensors")
    assert weights and all(k.startswith("unet.") and "lora" in k for k in weights)

    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    before = _image(pipe)
    pipe.load_lora_weights(lora_dir)
    after = _image(pipe)
    assert np.abs(after - before).max() > 1e-3, "the trained LoRA did not change the output"
    pipe.unload_lora_weights()
    np.testing.assert_allclose(_image(pipe), before, atol=1e-6)  # unloading gives the base model back


def test_the_kohya_file_of_a_v_prediction_run_says_so(tmp_path):
    from safetensors import safe_open

    overrides = ["prediction_type=v_prediction", "optim.max_steps=1"]
    base, lora_dir = train_tiny_lora(tmp_path, *overrides)
    with safe_open(lora_dir / "lora_kohya.safetensors", "pt") as file:
        header = file.metadata()
    assert header["ss_base_model_version"].endswith("_v"), header["ss_base_model_version"]
    assert header["modelspec.prediction_type"] == "v"


def test_text_encoder_lora_trains_with_its_own_rate_and_goes_into_both_files_with_the_training_settings(
    tmp_path,
):
    from safetensors import safe_open

    overrides = ["lora.text_encoder=true", "lora.text_encoder_lr=5e-3", "optim.name=adafactor"]
    base, lora_dir = train_tiny_lora(tmp_path, *overrides)
    weights = load_file(lora_dir / "pytorch_lora_weights.safetensors")
    text_b = [v for k, v in weights.items() if k.startswith("text_encoder.") and "lora_B" in k]
    assert text_b and all(v.abs().max() > 0 for v in text_b), "the text-encoder adapters did not train"
    kohya = load_file(lora_dir / "lora_kohya.safetensors")
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in kohya)
    for file in ("pytorch_lora_weights.safetensors", "lora_kohya.safetensors"):
        with safe_open(lora_dir / file, "pt") as handle:
            header = handle.metadata()
        assert header["ss_optimizer"] == "adafactor" and header["ss_text_encoder_lr"] == "0.005", file
        assert header["ss_num_train_images"] == "24" and header["ss_max_train_steps"] == "3", file
        assert header["ss_enable_bucket"] == "False" and header["ss_seed"] == "0", file
    assert header["ss_network_train_unet_only"] == "False"
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    before = _image(pipe)
    pipe.load_lora_weights(lora_dir)
    assert np.abs(_image(pipe) - before).max() > 1e-3
    with pytest.raises(ValueError, match="lora.text_encoder=true .* needs lora.rank > 0"):
        unet_trainer.check_config(load_config(unet_trainer.UNetTrainConfig, None, ["lora.text_encoder=true"]))
