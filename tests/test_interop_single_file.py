"""Single-file checkpoints (original LDM layout): what we write, diffusers' `from_single_file` reads to the same
images as the diffusers folder, and what diffusers reads, we read to the same images; bad files fail early."""

import argparse
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
from pipeline_helpers import box_mask, generator, one_thread, quiet, random_image, tiny  # noqa: F401
from safetensors.torch import load_file, save_file

from latentforge.models import single_file
from latentforge.models.components import Components
from latentforge.models.single_file import convert_checkpoint, empty_modules, first_mismatch, read_configs
from latentforge.models.single_file_export import text_encoder_to_ldm, unet_to_ldm, vae_to_ldm
from latentforge.pipelines.pipeline import InpaintPipeline, TextToImagePipeline
from latentforge.resources import architecture_dir

PROMPT = "a red circle"


def _image(pipe, **kwargs) -> np.ndarray:
    return quiet(pipe)(
        PROMPT, num_inference_steps=3, generator=generator(0), output_type="np", **kwargs
    ).images


def _diffusers_single_file(cls, file, folder):
    pipe = cls.from_single_file(str(file), config=str(folder), local_files_only=True, safety_checker=None)
    return quiet(pipe)


@pytest.mark.parametrize(("arch", "prediction_type"), [("tiny", "epsilon"), ("tiny-sd2", "v_prediction")])
def test_export_reads_back_in_diffusers_and_ours_to_the_folders_images(tmp_path, arch, prediction_type):
    components = tiny(arch, prediction_type=prediction_type)
    components.save_pretrained(tmp_path / "folder")
    file = components.save_single_file(tmp_path / "model.safetensors")
    folder_image = _image(
        quiet(StableDiffusionPipeline.from_pretrained(tmp_path / "folder", safety_checker=None))
    )

    theirs = _image(_diffusers_single_file(StableDiffusionPipeline, file, tmp_path / "folder"))
    ours = _image(TextToImagePipeline.from_single_file(file))
    also_ours = _image(TextToImagePipeline.from_pretrained(file))  # a file path is read as a single file
    assert np.abs(theirs - folder_image).max() <= 1e-4
    assert np.abs(ours - theirs).max() <= 1e-4
    np.testing.assert_array_equal(also_ours, ours)
    pipe = TextToImagePipeline.from_single_file(file)
    assert pipe.scheduler.config.prediction_type == prediction_type  # kept in the file's metadata
    assert pipe.tokenizer.pad_token == ("!" if arch == "tiny-sd2" else "<|endoftext|>")


def test_inpainting_checkpoint_reads_like_diffusers(tmp_path):
    components = tiny("tiny-inpaint")
    components.save_pretrained(tmp_path / "folder")
    file = components.save_single_file(tmp_path / "inpaint.safetensors")
    inputs = {"image": random_image(), "mask_image": box_mask()}
    theirs = _image(
        _diffusers_single_file(StableDiffusionInpaintPipeline, file, tmp_path / "folder"), **inputs
    )
    ours = _image(InpaintPipeline.from_single_file(file), paste_back=False, **inputs)  # as diffusers
    assert np.abs(ours - theirs).max() <= 1e-4


def test_fp16_export_stores_half_floats(tmp_path):
    file = tiny().save_single_file(tmp_path / "half.safetensors", fp16=True)
    assert {t.dtype for t in load_file(file).values()} == {torch.float16}
    pipe = TextToImagePipeline.from_single_file(file)
    assert pipe.unet.dtype == torch.float32  # read as float32 unless torch_dtype says otherwise
    assert np.abs(_image(pipe) - _image(TextToImagePipeline(tiny()))).max() < 0.05


def test_writer_uses_the_real_sd15_and_sd21_key_names():
    """On meta tensors: SD 1.5's 686 U-Net, 248 VAE and 196 text-encoder keys, names as in the released files,
    and diffusers' reader maps them back onto our modules exactly."""
    for arch in ("sd15", "sd21"):
        configs = read_configs(architecture_dir(arch))
        modules = empty_modules(configs)
        unet = unet_to_ldm(modules["unet"].state_dict(), configs["unet"])
        vae = vae_to_ldm(modules["vae"].state_dict(), configs["vae"])
        text = text_encoder_to_ldm(modules["text_encoder"].state_dict(), configs["text_encoder"])
        file = {"model.diffusion_model." + k: v for k, v in unet.items()}
        file |= {"first_stage_model." + k: v for k, v in vae.items()} | text
        assert first_mismatch(convert_checkpoint(file, configs), modules) is None
    for key in (
        "output_blocks.2.1.conv.weight",  # up block 0 has no attention: its upsampler is entry 1
        "output_blocks.5.2.conv.weight",
        "input_blocks.3.0.op.weight",
        "input_blocks.1.0.in_layers.2.weight",
        "middle_block.1.proj_in.weight",
        "time_embed.0.weight",
    ):
        assert key in unet
    assert "encoder.mid.attn_1.q.weight" in vae and vae["decoder.up.0.block.0.nin_shortcut.weight"].ndim == 4
    assert text["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (3072, 1024)
    configs = read_configs(architecture_dir("sd15"))
    modules = empty_modules(configs)
    assert (len(unet_to_ldm(modules["unet"].state_dict(), configs["unet"])), len(vae)) == (686, 248)
    assert len(text_encoder_to_ldm(modules["text_encoder"].state_dict(), configs["text_encoder"])) == 196


def test_ema_copy_is_read_when_asked(tmp_path):
    file = tiny().save_single_file(tmp_path / "model.safetensors")
    tensors = load_file(file)
    for key in [k for k in tensors if k.startswith("model.diffusion_model.")]:
        flat = "model_ema." + "".join(key.split(".")[1:])  # LDM's EMA names drop the dots
        tensors[flat] = tensors[key] + 0.01
    save_file(tensors, tmp_path / "ema.safetensors")
    plain = Components.from_single_file(tmp_path / "ema.safetensors")
    ema = Components.from_single_file(tmp_path / "ema.safetensors", use_ema=True)
    base = tiny().unet.conv_in.weight
    torch.testing.assert_close(plain.unet.conv_in.weight, base)
    torch.testing.assert_close(ema.unet.conv_in.weight, base + 0.01)
    with pytest.raises(ValueError, match="no EMA weights"):
        Components.from_single_file(file, use_ema=True)


def test_keys_that_cannot_tell_ask_for_an_architecture(tmp_path, monkeypatch):
    """Two architectures with the same shapes (epsilon and v-prediction): the error names both and the option."""
    root = tmp_path / "configs"
    shutil.copytree(architecture_dir("tiny"), root / "models" / "tiny")
    shutil.copytree(architecture_dir("tiny"), root / "models" / "tiny-v")
    scheduler = root / "models" / "tiny-v" / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "prediction_type": "v_prediction"}))
    monkeypatch.setattr(single_file, "configs_root", lambda: root)
    monkeypatch.setattr(single_file, "shipped_names", lambda kind: ["tiny", "tiny-v"])
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(tiny().save_single_file(tmp_path / "m.safetensors")), bare)  # no metadata
    with pytest.raises(
        ValueError, match=r"cannot tell apart: tiny \(epsilon, 32 px\), tiny-v \(v_prediction"
    ):
        Components.from_single_file(bare)
    picked = Components.from_single_file(bare, architecture=root / "models" / "tiny-v")
    assert picked.scheduler.config.prediction_type == "v_prediction"
    assert (
        Components.from_single_file(tmp_path / "m.safetensors").scheduler.config.prediction_type == "epsilon"
    )
    overridden = Components.from_single_file(bare, architecture="tiny", prediction_type="v_prediction")
    assert overridden.scheduler.config.prediction_type == "v_prediction"


def test_pickle_needs_permission_and_then_loads_weights_only(tmp_path):
    tensors = load_file(tiny().save_single_file(tmp_path / "model.safetensors"))
    torch.save({"state_dict": tensors, "global_step": 10}, tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match=r"is a pickle \(\.ckpt\).*allow_pickle=True \(--allow-pickle\)"):
        TextToImagePipeline.from_single_file(tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="is a pickle"):
        Components.from_pretrained(tmp_path / "model.ckpt")
    pipe = TextToImagePipeline.from_single_file(tmp_path / "model.ckpt", allow_pickle=True)
    np.testing.assert_array_equal(
        _image(pipe), _image(TextToImagePipeline.from_single_file(tmp_path / "model.safetensors"))
    )

    torch.save({"state_dict": tensors, "extra": argparse.Namespace()}, tmp_path / "objects.ckpt")
    with pytest.raises(ValueError, match=r"weights_only=True\) could not read it"):
        Components.from_single_file(tmp_path / "objects.ckpt", allow_pickle=True)


def test_bad_files_fail_before_loading(tmp_path):
    file = tiny().save_single_file(tmp_path / "model.safetensors")
    data = file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Components.from_single_file(tmp_path / "cut.safetensors")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "lora.safetensors")
    with pytest.raises(ValueError, match="not a Stable Diffusion 1.x/2.x single-file checkpoint"):
        Components.from_single_file(tmp_path / "lora.safetensors")
    with pytest.raises(ValueError, match="does not fit architecture small: unet: no weights for"):
        Components.from_single_file(file, architecture="small")
    with pytest.raises(ValueError, match="unknown checkpoint file type '.gguf'"):
        (tmp_path / "model.gguf").write_bytes(b"x")
        Components.from_single_file(tmp_path / "model.gguf")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny().save_single_file(file)


def test_unet_training_starts_from_a_single_file(tmp_path):
    from latentforge.training import unet as unet_trainer

    file = tiny().save_single_file(tmp_path / "base.safetensors")
    config = dataclasses.replace(unet_trainer.UNetTrainConfig(), base=str(file))
    components = unet_trainer.load_components(config)
    torch.testing.assert_close(components.unet.conv_in.weight, tiny().unet.conv_in.weight)
