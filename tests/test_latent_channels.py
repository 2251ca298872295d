"""Per-channel latent standardization folded into the VAE: same images through encode/decode, unit channels."""

import json

import pytest
import torch
from diffusers import AutoencoderKL
from pipeline_helpers import SIZE, benchmark_script, one_thread, tiny  # noqa: F401  (autouse fixture)

from latentforge.models.latent_channels import latent_channel_stats, standardize_latent_channels


def _images(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth random images with per-image offsets, so channels differ in mean and spread
    low = torch.rand(n, 3, SIZE // 8, SIZE // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=SIZE, mode="bilinear").clamp(-1, 1)


def test_standardized_latents_are_unit_per_channel_and_decode_to_the_same_images():
    vae = tiny(fresh=True).vae.eval()
    images = _images()
    with torch.no_grad():
        before_latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        before = vae.decode(before_latents / vae.config.scaling_factor).sample
    mean0, std0 = latent_channel_stats(vae, images)
    assert (std0.max() / std0.min()) > 1.2  # the random VAE's channels do differ, or the test shows nothing
    stats = standardize_latent_channels(vae, images)
    assert stats["std"] == pytest.approx(std0.tolist())
    assert vae.config.scaling_factor == 1.0
    mean, std = latent_channel_stats(vae, images)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-5, rtol=0)
    with torch.no_grad():
        dist = vae.encode(images).latent_dist
        after = vae.decode(dist.mean / vae.config.scaling_factor).sample
        # the new latents are the old ones, standardized; the posterior's spread scales with them
        expected = (before_latents - mean0.view(1, -1, 1, 1)) / std0.view(1, -1, 1, 1)
        torch.testing.assert_close(dist.mean, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_a_vae_without_quant_convs_is_refused():
    vae = tiny(fresh=True).vae
    vae.register_to_config(use_quant_conv=False)
    with pytest.raises(ValueError, match="use_quant_conv/use_post_quant_conv off"):
        standardize_latent_channels(vae, _images(2))


def test_the_ablation_script_writes_a_standardized_vae_and_overwrites_nothing(tmp_path, capsys):
    tiny(fresh=True).vae.save_pretrained(tmp_path / "model" / "vae")
    script = benchmark_script("standardize_vae")
    script.main([str(tmp_path / "model"), str(tmp_path / "out"), "--num-scenes", "8"])
    vae = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae")
    assert vae.config.scaling_factor == 1.0
    stats = json.loads((tmp_path / "out" / "vae" / "latent_channels.json").read_text())
    assert len(stats["std"]) == vae.config.latent_channels and stats["source"] == str(tmp_path / "model")
    assert "per-channel std before" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="exists; choose a new folder"):
        script.main([str(tmp_path / "model"), str(tmp_path / "out")])
