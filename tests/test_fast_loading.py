"""Components.from_pretrained builds the U-Net and VAE on the meta device and assigns the file's weights once:
the networks equal diffusers' own from_pretrained, and folders it cannot read that way fall back to it."""

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from pipeline_helpers import tiny
from safetensors.torch import load_file, save_file

from latentforge.models.components import Components


def _assert_same_network(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    assert not ours.training
    assert dict(ours.config) == dict(theirs.config)
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == reference.keys()
    for key, tensor in reference.items():
        assert mine[key].dtype == tensor.dtype and not mine[key].is_meta, key
        assert torch.equal(mine[key], tensor), key


@pytest.mark.parametrize(("fp16_file", "dtype"), [(False, None), (True, None), (True, torch.float16)])
def test_networks_equal_diffusers_from_pretrained(tmp_path, fp16_file, dtype):
    tiny().save_pretrained(tmp_path / "m", fp16=fp16_file)
    loaded = Components.from_pretrained(tmp_path / "m", torch_dtype=dtype)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    _assert_same_network(loaded.unet, UNet2DConditionModel.from_pretrained(tmp_path / "m" / "unet", **kwargs))
    _assert_same_network(loaded.vae, AutoencoderKL.from_pretrained(tmp_path / "m" / "vae", **kwargs))


def test_weights_that_do_not_fit_the_config_go_through_from_pretrained(tmp_path):
    """An extra key (say, of an older layout) makes the one-read path give up; diffusers loads it as always."""
    tiny().save_pretrained(tmp_path / "m")
    file = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({**load_file(file), "not_a_layer.weight": torch.zeros(1)}, file)
    loaded = Components.from_pretrained(tmp_path / "m")
    _assert_same_network(loaded.unet, UNet2DConditionModel.from_pretrained(tmp_path / "m" / "unet"))


def test_a_bin_only_folder_goes_through_from_pretrained(tmp_path):
    tiny().save_pretrained(tmp_path / "m")
    folder = tmp_path / "m" / "vae"
    torch.save(
        load_file(folder / "diffusion_pytorch_model.safetensors"), folder / "diffusion_pytorch_model.bin"
    )
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    loaded = Components.from_pretrained(tmp_path / "m")
    _assert_same_network(loaded.vae, AutoencoderKL.from_pretrained(folder))
