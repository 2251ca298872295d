"""The trainer's LoRA export keeps its scale: with alpha != rank, diffusers' `load_lora_weights` of the diffusers
file and of the kohya file both give the image of the adapter as it was trained."""

import json

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from pipeline_helpers import generator, one_thread, quiet, reference, tiny, train_tiny_lora  # noqa: F401
from safetensors import safe_open

from latentforge.models.components import Components
from latentforge.pipelines.pipeline import TextToImagePipeline
from latentforge.training.lora import KOHYA_FILE, add_lora, save_lora
from latentforge.training.stage_configs import LoRAConfig


def _image(pipe) -> np.ndarray:
    return quiet(pipe)("a red circle", num_inference_steps=3, generator=generator(0), output_type="np").images


def _adapted(rank: int, alpha: float) -> Components:
    """Tiny components with trained-looking (random, non-zero) adapters on the U-Net and the text encoder."""
    components = tiny(fresh=True)
    add_lora(components.unet, LoRAConfig(rank=rank, alpha=alpha))
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in components.unet.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=rng) * 0.1)
    targets = ("q_proj", "k_proj", "v_proj", "out_proj")  # diffusers' scripts' text-encoder LoRA targets
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets))
    state = {
        f"encoder.layers.{i}.self_attn.{proj}.lora_{ab}.weight": torch.randn(shape, generator=rng) * 0.3
        for i in range(5)
        for proj in targets
        for ab, shape in (("A", (rank, 32)), ("B", (32, rank)))
    }
    components.text_encoder.load_adapter(adapter_name="default", adapter_state_dict=state, peft_config=config)
    return components


def test_both_exported_files_give_the_trained_adapters_image_in_diffusers(tmp_path):
    components = _adapted(rank=4, alpha=16.0)
    trained = _image(TextToImagePipeline(components))
    assert np.abs(trained - _image(TextToImagePipeline(tiny()))).max() > 1e-2
    save_lora(components.unet, tmp_path, text_encoder=components.text_encoder, title="test LoRA")

    for file in ("pytorch_lora_weights.safetensors", KOHYA_FILE):
        theirs = reference(StableDiffusionPipeline, tiny(fresh=True))
        theirs.load_lora_weights(str(tmp_path), weight_name=file)
        assert np.abs(_image(theirs) - trained).max() <= 1e-4, file
        ours = TextToImagePipeline(tiny(fresh=True))
        ours.load_lora_weights(tmp_path / file)
        assert np.abs(_image(ours) - trained).max() <= 1e-4, file

    with safe_open(tmp_path / KOHYA_FILE, framework="pt") as kohya:
        header = kohya.metadata()
        keys = list(kohya.keys())
        alphas = {kohya.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert alphas == {16.0}
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in keys)
    assert any(k.startswith("lora_unet_down_blocks_1_attentions_0_") for k in keys)
    assert header["ss_network_dim"] == "4" and header["ss_network_alpha"] == "16.0"
    assert header["ss_base_model_version"] == "sd_v1" and header["ss_network_train_unet_only"] == "False"
    assert header["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert header["modelspec.title"] == "test LoRA"
    with safe_open(tmp_path / "pytorch_lora_weights.safetensors", framework="pt") as diffusers_file:
        metadata = json.loads(diffusers_file.metadata()["lora_adapter_metadata"])
    assert metadata["unet.lora_alpha"] == 16.0 and metadata["text_encoder.lora_alpha"] == 16.0


def test_trained_lora_with_alpha_other_than_rank_loads_with_its_scale(tmp_path):
    base, lora_dir = train_tiny_lora(tmp_path, "lora.rank=4", "lora.alpha=12")
    images = []
    for file in ("pytorch_lora_weights.safetensors", KOHYA_FILE):
        pipe = quiet(StableDiffusionPipeline.from_pretrained(base, safety_checker=None))
        pipe.load_lora_weights(str(lora_dir), weight_name=file)
        assert pipe.unet.peft_config["default_0"].lora_alpha == 12
        images.append(_image(pipe))
    assert np.abs(images[0] - images[1]).max() <= 1e-4
