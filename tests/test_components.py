"""Components load, build and save in the diffusers layout; stock diffusers reads what we write."""

import json
import shutil

import open_clip
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
from safetensors import safe_open
from safetensors.torch import load_file

from latentforge.cli import main as cli_main
from latentforge.models.components import Components
from latentforge.models.openclip import open_clip_text_to_hf, open_clip_token_features


def _outputs(vae, text_encoder, unet) -> dict[str, torch.Tensor]:
    """U-Net, VAE (encode mean, decode) and text-encoder outputs on fixed seeded inputs."""
    gen = torch.Generator().manual_seed(0)
    channels = unet.config.in_channels
    latent_size = unet.config.sample_size
    pixel_size = vae.config.sample_size
    latents = torch.randn(2, channels, latent_size, latent_size, generator=gen)
    images = torch.rand(2, 3, pixel_size, pixel_size, generator=gen) * 2 - 1
    ids = torch.randint(0, 49406, (2, 77), generator=gen)
    with torch.no_grad():
        hidden = text_encoder(ids).last_hidden_state
        return {
            "text": hidden,
            "unet": unet(latents, torch.tensor([10, 500]), encoder_hidden_states=hidden).sample,
            "vae_encode": vae.encode(images).latent_dist.mean,
            "vae_decode": vae.decode(latents[:, :4]).sample,
        }


def _assert_same_outputs(ours: Components, pipe) -> None:
    expected = _outputs(ours.vae, ours.text_encoder, ours.unet)
    actual = _outputs(pipe.vae, pipe.text_encoder, pipe.unet)
    for name, tensor in expected.items():
        diff = (tensor - actual[name]).abs().max().item()
        assert diff <= 1e-6, f"{name} differs by {diff}"


@pytest.mark.parametrize(
    ("architecture", "pipeline_cls"),
    [("tiny", StableDiffusionPipeline), ("tiny-inpaint", StableDiffusionInpaintPipeline)],
)
def test_stock_diffusers_loads_what_we_save(tmp_path, architecture, pipeline_cls):
    components = Components.from_architecture(architecture, seed=3)
    components.save_pretrained(tmp_path / "model")
    pipe = pipeline_cls.from_pretrained(tmp_path / "model")
    _assert_same_outputs(components, pipe)
    assert type(pipe.scheduler) is type(components.scheduler)
    text = "a red circle"
    assert pipe.tokenizer(text).input_ids == components.tokenizer(text).input_ids
    assert not list((tmp_path / "model").rglob("*.bin"))  # safetensors only


def test_our_loader_round_trips(tmp_path):
    components = Components.from_architecture("tiny", seed=5)
    components.save_pretrained(tmp_path / "model")
    loaded = Components.from_pretrained(tmp_path / "model")
    assert loaded.weights_hash() == components.weights_hash()
    assert loaded.name == "model"
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(components.scheduler.config)


def _tiny_open_clip() -> open_clip.CLIP:
    torch.manual_seed(0)
    text_cfg = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}
    vision_cfg = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}
    model = open_clip.CLIP(embed_dim=16, vision_cfg=vision_cfg, text_cfg=text_cfg).eval()
    with torch.no_grad():  # open_clip zero-initialises nothing we'd miss, but randomise the LayerNorms too
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return model


def test_open_clip_text_tower_converts_with_equal_outputs():
    model = _tiny_open_clip()
    hf = open_clip_text_to_hf(model)
    ids = open_clip.tokenize(["a red circle to the left of a blue square", "two stars", ""])
    with torch.no_grad():
        hf_out = hf(ids)
        expected_tokens = open_clip_token_features(model, ids)
        expected_pooled = model.encode_text(ids)
        pooled = hf_out.pooler_output @ model.text_projection
    assert (hf_out.last_hidden_state - expected_tokens).abs().max() <= 1e-6
    assert (pooled - expected_pooled).abs().max() <= 1e-6


def test_open_clip_conditioned_model_saves_in_diffusers_layout(tmp_path):
    components = Components.from_architecture("tiny", seed=1)
    components.text_encoder = open_clip_text_to_hf(_tiny_open_clip())
    components.save_pretrained(tmp_path / "model")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "model")
    _assert_same_outputs(components, pipe)


def test_fp16_save_halves_the_size_and_loads(tmp_path):
    components = Components.from_architecture("tiny", seed=2)
    components.save_pretrained(tmp_path / "fp32")
    components.save_pretrained(tmp_path / "fp16", fp16=True)
    for part, file in [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ]:
        size32 = (tmp_path / "fp32" / part / file).stat().st_size
        size16 = (tmp_path / "fp16" / part / file).stat().st_size
        assert 0.45 <= size16 / size32 <= 0.55, (part, size16 / size32)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "fp16", dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16
    expected = _outputs(components.vae, components.text_encoder, components.unet)["unet"]
    actual = _outputs(pipe.vae.float(), pipe.text_encoder.float(), pipe.unet.float())["unet"]
    assert (expected - actual).abs().max() <= 2e-2  # only the fp16 rounding of the weights


def test_from_architecture_is_seeded():
    a = Components.from_architecture("tiny", seed=7).weights_hash()
    assert a == Components.from_architecture("tiny", seed=7).weights_hash()
    assert a != Components.from_architecture("tiny", seed=8).weights_hash()


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="tiny"):
        Components.from_architecture("no-such-model")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "model"
    Components.from_architecture("tiny", seed=0).save_pretrained(path)
    return path


def _copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "model")


@pytest.mark.parametrize(
    ("component", "file"),
    [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "config.json"),
        ("text_encoder", "model.safetensors"),
        ("tokenizer", "tokenizer.json"),
        ("scheduler", "scheduler_config.json"),
    ],
)
def test_missing_file_names_component_and_file(saved, tmp_path, component, file):
    model = _copy(saved, tmp_path)
    (model / component / file).unlink()
    if component == "tokenizer":
        (model / component / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match=component) as info:
        Components.from_pretrained(model)
    assert file.split(".")[0] in str(info.value) or "weights" in str(info.value)


def test_missing_component_folder(saved, tmp_path):
    import shutil

    model = _copy(saved, tmp_path)
    shutil.rmtree(model / "text_encoder")
    with pytest.raises(FileNotFoundError, match="text_encoder"):
        Components.from_pretrained(model)


@pytest.mark.parametrize(
    ("component", "file", "content"),
    [
        ("unet", "diffusion_pytorch_model.safetensors", b"not a safetensors file"),
        ("vae", "diffusion_pytorch_model.safetensors", b"\x00" * 64),
        ("text_encoder", "model.safetensors", b"garbage"),
        ("vae", "config.json", b"{ not json"),
        ("tokenizer", "tokenizer.json", b"{ broken"),
    ],
)
def test_corrupt_file_names_component_and_file(saved, tmp_path, component, file, content):
    model = _copy(saved, tmp_path)
    (model / component / file).write_bytes(content)
    with pytest.raises(ValueError, match=component) as info:
        Components.from_pretrained(model)
    assert file in str(info.value) or str(model / component) in str(info.value)


def test_weights_that_do_not_match_the_config(saved, tmp_path):
    model = _copy(saved, tmp_path)
    config = json.loads((model / "unet" / "config.json").read_text())
    config["block_out_channels"] = [64, 64]
    (model / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unet"):
        Components.from_pretrained(model)


def test_save_refuses_to_overwrite(saved):
    before = sorted(p.relative_to(saved) for p in saved.rglob("*"))
    with pytest.raises(FileExistsError, match="overwrite"):
        Components.from_architecture("tiny", seed=9).save_pretrained(saved)
    assert sorted(p.relative_to(saved) for p in saved.rglob("*")) == before
    assert (
        Components.from_pretrained(saved).weights_hash()
        == Components.from_architecture("tiny").weights_hash()
    )


def test_export_command(tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli_main(["export", "tiny", str(out), "--architecture", "--seed", "4", "--fp16"]) == 0
    with safe_open(out / "unet" / "diffusion_pytorch_model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}  # noqa: SIM118
    StableDiffusionPipeline.from_pretrained(out)
    assert cli_main(["export", "tiny", str(out), "--architecture"]) == 2
    assert "overwrite" in capsys.readouterr().err
    # re-exporting a trained model keeps its model card and does not record where it was loaded from
    (out / "README.md").write_text("# model card\n")
    again = tmp_path / "again"
    assert cli_main(["export", str(out), str(again)]) == 0
    assert (again / "README.md").read_text() == "# model card\n"
    for config in again.glob("*/config.json"):
        assert "_name_or_path" not in json.loads(config.read_text()), config
    StableDiffusionPipeline.from_pretrained(again)
    assert not (again / "generation_defaults.json").exists()

    # recommended sampling settings: written on request, carried by a re-export, flags replace single values
    tuned = tmp_path / "tuned"
    assert cli_main(["export", str(out), str(tuned), "--steps", "20", "--guidance-rescale", "0.7"]) == 0
    defaults = json.loads((tuned / "generation_defaults.json").read_text())
    assert defaults == {"steps": 20, "guidance_scale": 7.5, "guidance_rescale": 0.7}
    StableDiffusionPipeline.from_pretrained(tuned)  # diffusers ignores the file
    assert cli_main(["export", str(tuned), str(tmp_path / "t2"), "--guidance", "5"]) == 0
    carried = json.loads((tmp_path / "t2" / "generation_defaults.json").read_text())
    assert carried == {"steps": 20, "guidance_scale": 5.0, "guidance_rescale": 0.7}
    capsys.readouterr()
    assert cli_main(["export", str(out), str(tmp_path / "bad"), "--guidance-rescale", "1.5"]) == 2
    assert "guidance_rescale must be a number in [0.0, 1.0], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_export_with_another_vae_saves_that_vae_and_refuses_one_of_another_latent_space(tmp_path, capsys):
    base, donor = tmp_path / "base", tmp_path / "donor"
    assert cli_main(["export", "tiny", str(base), "--architecture", "--seed", "1"]) == 0
    assert cli_main(["export", "tiny", str(donor), "--architecture", "--seed", "2", "--fp16"]) == 0
    out = tmp_path / "out"
    assert cli_main(["export", str(base), str(out), "--vae", str(donor)]) == 0
    saved = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    theirs = load_file(donor / "vae" / "diffusion_pytorch_model.safetensors")
    ours = load_file(base / "vae" / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == theirs.keys() and all(saved[k].dtype == torch.float32 for k in saved)
    assert all(
        torch.equal(saved[k], theirs[k].float()) for k in saved
    )  # the donor's, in the base's precision
    assert not all(torch.equal(saved[k], ours[k]) for k in saved)
    unet = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    base_unet = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(unet[k], base_unet[k]) for k in unet)
    StableDiffusionPipeline.from_pretrained(out)

    wide = tmp_path / "wide"
    shutil.copytree(donor, wide)
    config = json.loads((wide / "vae" / "config.json").read_text())
    (wide / "vae" / "config.json").write_text(json.dumps({**config, "latent_channels": 8}))
    Components.from_architecture(wide).vae.save_pretrained(wide / "vae")
    capsys.readouterr()
    assert cli_main(["export", str(base), str(tmp_path / "bad"), "--vae", str(wide)]) == 2
    err = capsys.readouterr().err
    assert "--vae:" in err and "8 channels" in err and "4 channels" in err and not (tmp_path / "bad").exists()
    assert cli_main(["export", str(base), str(tmp_path / "bad"), "--vae", str(tmp_path / "none")]) == 2
    assert "--vae: folder" in capsys.readouterr().err and not (tmp_path / "bad").exists()
