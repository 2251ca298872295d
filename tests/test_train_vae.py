"""The VAE trainer end to end on the tiny architecture: trains (discriminator on), skips a NaN step and
corrupt images, checkpoints, and exports a VAE that stock diffusers loads, with a measured scaling_factor."""

import json
import math
import random

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from latentforge.config_loader import load_config
from latentforge.data.shapes import render_scene, sample_scene
from latentforge.models.component_files import load_vae
from latentforge.resources import config_file
from latentforge.training import losses, vae, vae_networks
from latentforge.training.checkpoints import OBJECTS_TENSORS, is_complete
from latentforge.training.stage_configs import VAELossConfig


def _imagefolder_with_corrupt_files(root, good: int, corrupt: int):
    """An imagefolder (metadata.jsonl) of `good` shapes renders and `corrupt` unreadable files."""
    root.mkdir()
    rows = []
    for i in range(good):
        render_scene(sample_scene(random.Random(i), size=32)).save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"image {i}"})
    for i in range(corrupt):
        data = (root / "0.png").read_bytes()[: 40 + 30 * i] if i % 2 else b""  # truncated PNG / empty file
        (root / f"bad{i}.png").write_bytes(data)
        rows.append({"file_name": f"bad{i}.png", "text": f"bad {i}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def test_smoke_vae_trains_skips_bad_data_and_exports(tmp_path, monkeypatch):
    data = _imagefolder_with_corrupt_files(tmp_path / "data", good=14, corrupt=4)
    out = tmp_path / "run"
    config = load_config(
        vae.VAETrainConfig,
        config_file("train", "smoke-vae"),
        [
            f"output_dir={out}",
            f"data.dataset={data}",
            "data.held_out_fraction=0.1",
            "data.max_corrupt_fraction=0.6",
        ],
    )
    calls = {"n": 0}
    real_rec = losses.reconstruction_loss

    def nan_on_second_call(*args, **kwargs):
        calls["n"] += 1
        value = real_rec(*args, **kwargs)
        return value * float("nan") if calls["n"] == 2 else value

    monkeypatch.setattr(losses, "reconstruction_loss", nan_on_second_call)
    model_dir = vae.train(config)

    metrics = json.loads((model_dir / "vae_metrics.json").read_text())
    assert metrics["steps"] == 4
    assert metrics["nonfinite_steps_skipped"] == 1
    assert metrics["corrupt_images_skipped"] >= 1, "corrupt files were in the epoch but none was reported"
    assert math.isfinite(metrics["held_out_psnr"]) and 0 < metrics["held_out_ssim"] <= 1

    # checkpoints: both complete (keep_last=2); the discriminator (model_1, on from step 2) changed
    ckpts = out / "checkpoints"
    assert is_complete(ckpts / "checkpoint-2") and is_complete(ckpts / "checkpoint-4")
    d2 = load_file(ckpts / "checkpoint-2" / "model_1.safetensors")
    d4 = load_file(ckpts / "checkpoint-4" / "model_1.safetensors")
    assert any(not torch.equal(d2[k], d4[k]) for k in d2 if d2[k].is_floating_point())

    # the export: stock diffusers loads it; weights trained; scaling_factor = 1 / std of training latents
    exported = AutoencoderKL.from_pretrained(model_dir / "vae")
    initial = load_vae("tiny", seed=0)
    assert not torch.equal(exported.decoder.conv_out.weight, initial.decoder.conv_out.weight)
    assert all(torch.isfinite(p).all() for p in exported.parameters())
    assert exported.config.scaling_factor == pytest.approx(metrics["scaling_factor"])
    assert exported.config.scaling_factor != pytest.approx(0.18215)
    loader = vae.image_loader(*vae.load_splits(config.data)[:1], config.data, 4, shuffle=False, flip=False)
    std = vae.measure_latent_std(exported, loader, 16, torch.device("cpu"))
    assert 1 / std == pytest.approx(exported.config.scaling_factor, rel=0.1)
    assert "held_out_psnr" in (model_dir / "README.md").read_text()


def test_decoder_only_finetune_keeps_encoder_and_scale(tmp_path):
    source = tmp_path / "source"
    start = load_vae("tiny", seed=3)
    start.register_to_config(scaling_factor=0.5)
    start.save_pretrained(source / "vae")
    config = load_config(
        vae.VAETrainConfig,
        config_file("train", "smoke-vae"),
        [f"output_dir={tmp_path / 'run'}", f"model={source}", "train_encoder=false", "ema.enabled=true"],
    )
    exported = AutoencoderKL.from_pretrained(vae.train(config) / "vae")
    # the EMA follows the trained (decoder-side) parameters only
    (checkpoint, *_) = sorted((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    ema_tensors = [k for k in load_file(checkpoint / OBJECTS_TENSORS) if k.startswith("2.shadow_params.")]
    decoder_side = [n for n, _ in start.named_parameters() if not n.startswith(("encoder.", "quant_conv."))]
    assert len(ema_tensors) == len(decoder_side) < len(list(start.parameters()))
    # a fresh run over the same output_dir would replace those checkpoints: refused, with the way out
    markers = {p: p.stat().st_mtime_ns for p in (tmp_path / "run" / "checkpoints").glob("*/COMPLETE.json")}
    with pytest.raises(FileExistsError, match="checkpoint.resume=latest"):
        vae.train(config)
    assert markers and markers == {p: p.stat().st_mtime_ns for p in markers}

    for name, before in start.state_dict().items():
        after = exported.state_dict()[name]
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(before, after), f"{name} changed although the encoder was frozen"
    assert not torch.equal(exported.decoder.conv_out.weight, start.decoder.conv_out.weight)
    assert exported.config.scaling_factor == 0.5  # same latents: the U-Net's scale must not move


def test_decoder_only_finetune_needs_trained_weights(tmp_path):
    config = load_config(
        vae.VAETrainConfig,
        config_file("train", "smoke-vae"),
        [f"output_dir={tmp_path}", "train_encoder=false"],
    )
    with pytest.raises(ValueError, match="train_encoder=false.*no trained weights"):
        vae.train(config)


def test_init_posterior_logvar_sets_the_starting_noise():
    fresh = load_vae("tiny", seed=0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before = fresh.encode(images).latent_dist.logvar.mean().item()
        vae.init_posterior_logvar(fresh, -6.0)
        after = fresh.encode(images).latent_dist
    assert abs(before) < 1.5
    assert after.logvar.mean().item() == pytest.approx(-6.0, abs=1.0)
    assert after.std.mean().item() < 0.1


def test_downsample_is_a_low_pass_and_refuses_uneven_sides():
    flat = torch.full((1, 2, 16, 16), 0.3)
    assert torch.allclose(vae_networks.downsample(flat, 4), torch.full((1, 2, 4, 4), 0.3))
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checkers = ((rows + cols) % 2 * 2 - 1).float()[None, None]  # the highest frequency there is
    down = vae_networks.downsample(checkers, 2)
    assert down.shape == (1, 1, 8, 8)
    assert down[..., 1:-1, 1:-1].abs().max() < 1e-6  # removed (a plain stride-2 pick would keep +-1)
    with pytest.raises(ValueError, match="cannot downsample 6x6 by 4"):
        vae_networks.downsample(torch.randn(1, 1, 6, 6), 4)


def test_scale_equivariance_term_decodes_downsampled_latents_into_downsampled_images():
    tiny = load_vae("tiny", seed=0)
    autoencoder = vae_networks.AutoencoderWithPosterior(tiny)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    lc = VAELossConfig(scale_equivariance_weight=0.5, edge_weight=2.0)
    torch.manual_seed(7)
    _, loss, logs = vae._generator_loss(autoencoder, None, None, images, lc, disc_on=False)

    torch.manual_seed(7)  # the same draws: the factor (2 or 4), then the posterior's sample
    factor = 2 ** int(torch.randint(1, 3, ()))
    with torch.no_grad():
        latents = tiny.encode(images).latent_dist.sample()
        small = tiny.decode(vae_networks.downsample(latents, factor)).sample
    assert small.shape[-1] == 32 // factor
    expected = losses.reconstruction_loss(vae_networks.downsample(images, factor), small, "l1", 2.0)
    assert logs["scale_eq"] == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(logs["rec"] + 1e-6 * logs["kl"] + 0.5 * logs["scale_eq"], rel=1e-5)

    _, _, off = vae._generator_loss(autoencoder, None, None, images, VAELossConfig(), disc_on=False)
    assert "scale_eq" not in off  # weight 0: no second decode


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.scale_equivariance_weight=-1"], "must be >= 0"),
        (["loss.scale_equivariance_weight=1", "data.resolution=20"], "10x10 latents.*divide by 4"),
    ],
)
def test_scale_equivariance_settings_that_cannot_work_are_refused(tmp_path, overrides, message):
    config = load_config(
        vae.VAETrainConfig, config_file("train", "smoke-vae"), [f"output_dir={tmp_path}", *overrides]
    )
    with pytest.raises(ValueError, match=message):
        vae.train(config)
    assert not (tmp_path / "checkpoints").exists()
