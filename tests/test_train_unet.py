"""The U-Net trainer on the tiny architecture: export loads in stock diffusers, the cache holds what it
claims, a killed-and-resumed run equals an uninterrupted one, and two processes stay in sync."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from latentforge.config_loader import load_config
from latentforge.data.training_data import image_loader, load_splits
from latentforge.data.transforms import swap_left_right
from latentforge.models.components import Components
from latentforge.models.tokenizer import tokenize
from latentforge.resources import config_file
from latentforge.training import unet as unet_trainer
from latentforge.training.cache_encoding import encode_captions
from latentforge.training.checkpoints import MARKER
from latentforge.training.latent_cache import cache_key, load_or_build_cache, sample_inputs

ROOT = Path(__file__).resolve().parents[1]
# v-prediction, zero terminal SNR, noise offset, logit-normal timesteps, min-SNR, EMA, flips and caption dropout
# all on: resume must replay all of them
OVERRIDES = [
    "optim.max_steps=6",
    "prediction_type=v_prediction",
    "zero_terminal_snr=true",
    "noise_offset=0.05",
    "timestep_sampling=logit_normal",
    "checkpoint.every_steps=2",
    "checkpoint.keep_last=0",
]


# `latentforge train unet ...` that SIGKILLs itself right after the checkpoint of step argv[1] is written: a
# real kill (no cleanup, no final save), of a run that would otherwise go on
KILLED_AFTER_CHECKPOINT = """
import os, signal, sys
from latentforge.cli import main
from latentforge.training.checkpoints import CheckpointManager

kill_at, save = int(sys.argv[1]), CheckpointManager.save

def save_then_die(self, step, *args, **kwargs):
    folder = save(self, step, *args, **kwargs)
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return folder

CheckpointManager.save = save_then_die
sys.exit(main(sys.argv[2:]))
"""


def _cli(
    *args: str, launcher: tuple[str, ...] = (), kill_after_checkpoint: int = 0
) -> subprocess.CompletedProcess:
    program = ["-c", KILLED_AFTER_CHECKPOINT, str(kill_after_checkpoint)] if kill_after_checkpoint else []
    command = [*(launcher or [sys.executable]), *(program or ["-m", "latentforge"])]
    command += ["train", "unet", "--config", "smoke-unet", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """6 steps in one go, in this process."""
    out = tmp_path_factory.mktemp("straight")
    config = load_config(
        unet_trainer.UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={out}", *OVERRIDES]
    )
    unet_trainer.train(config)
    return config, out


def test_export_loads_in_stock_diffusers_and_generates(straight):
    config, out = straight
    pipe = StableDiffusionPipeline.from_pretrained(out / "model", safety_checker=None)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert (
        pipe.scheduler.config.rescale_betas_zero_snr and pipe.scheduler.config.timestep_spacing == "trailing"
    )
    image = pipe(
        "a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images[0]
    assert image.shape == (32, 32, 3) and float(image.std()) > 0
    initial = Components.from_architecture("tiny", seed=config.seed).unet
    assert not torch.equal(initial.conv_in.weight, pipe.unet.conv_in.weight), "the U-Net did not train"
    assert (out / "validation" / "step-6.png").is_file()
    assert "weight_checksum_per_process" in (out / "model" / "README.md").read_text()


def test_zero_terminal_snr_leaves_no_image_in_the_last_step_and_needs_v_prediction(tmp_path):
    def components(*overrides):
        config = load_config(
            unet_trainer.UNetTrainConfig,
            config_file("train", "smoke-unet"),
            [f"output_dir={tmp_path}", *overrides],
        )
        return config, unet_trainer.load_components(config)

    latents, noise = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    last = torch.tensor([999, 999])
    config, c = components("prediction_type=v_prediction", "zero_terminal_snr=true")
    schedule = unet_trainer.DDPMScheduler.from_config(c.scheduler.config)
    assert torch.allclose(schedule.add_noise(latents, noise, last), noise, atol=1e-6)  # pure noise at t=T
    unet = c.unet.requires_grad_(False)
    loss = unet_trainer.diffusion_loss(unet, c, schedule, (latents, torch.randn(2, 77, 32), None), config)
    assert torch.isfinite(loss) and loss > 0
    # SD's schedule (the default) leaks: the last step still holds a visible fraction of the image
    _, plain = components("prediction_type=v_prediction")
    leaky = unet_trainer.DDPMScheduler.from_config(plain.scheduler.config).add_noise(latents, noise, last)
    assert (leaky - noise).abs().max() > 0.01
    with pytest.raises(ValueError, match="prediction_type=v_prediction"):
        components("zero_terminal_snr=true")  # the smoke base is an epsilon model


def test_zero_terminal_snr_turns_karras_sigmas_off(tmp_path):
    """Karras sigmas from the rescaled last step would spend a third of the steps above sigma 300 (4096, 3012,
    2184, ...), where every seed denoises to the same image; trailing timesteps drop to 40 after the first."""
    base = tmp_path / "arch"
    shutil.copytree(ROOT / "configs" / "models" / "tiny", base)
    shutil.copy(
        ROOT / "latentforge" / "assets" / "default-model" / "scheduler" / "scheduler_config.json",
        base / "scheduler",
    )
    (base / "model_index.json").write_text(
        (base / "model_index.json").read_text().replace("DDIMScheduler", "DPMSolverMultistepScheduler")
    )
    config = load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [
            f"output_dir={tmp_path / 'run'}",
            f"base={base}",
            "prediction_type=v_prediction",
            "zero_terminal_snr=true",
        ],
    )
    scheduler = unet_trainer.load_components(config).scheduler
    assert (
        type(scheduler).__name__ == "DPMSolverMultistepScheduler"
        and scheduler.config.use_karras_sigmas is False
    )
    scheduler.set_timesteps(20)
    assert (scheduler.sigmas > 100).sum() == 1
    karras = type(scheduler).from_config(scheduler.config, use_karras_sigmas=True)
    karras.set_timesteps(20)
    assert (karras.sigmas > 300).sum() >= 7  # what the export would sample with otherwise


def test_cache_holds_both_flip_variants_and_is_keyed_on_its_inputs(straight):
    config, out = straight
    (folder,) = (out / "cache").iterdir()
    cache = load_file(folder / "cache.safetensors")
    components = Components.from_pretrained(out / "model")
    data = load_splits(config.data)[0]
    assert cache["mean.0"].shape[:2] == (len(data), 2)
    batch = next(iter(image_loader(data, config.data, 1, shuffle=False, flip=False)))
    with torch.no_grad():
        flipped = components.vae.encode(batch["pixel_values"].flip(-1)).latent_dist.mean
    torch.testing.assert_close(cache["mean.0"][0, 1].float(), flipped[0], atol=2e-3, rtol=2e-3)
    swapped = encode_captions(
        components.text_encoder, components.tokenizer, [swap_left_right(batch["text"][0])], "cpu"
    )
    row = cache["text_index"][0, 1]
    torch.testing.assert_close(cache["embeds"][row].float(), swapped[0], atol=2e-3, rtol=2e-3)
    empty = encode_captions(components.text_encoder, components.tokenizer, [""], "cpu")[0]
    torch.testing.assert_close(cache["embeds"][0].float(), empty, atol=2e-3, rtol=2e-3)  # row 0 = ""
    assert (
        cache["input_ids"][row].tolist()
        == tokenize(components.tokenizer, [swap_left_right(batch["text"][0])])[0].tolist()
    )
    assert cache["input_ids"][0].tolist() == tokenize(components.tokenizer, [""])[0].tolist()

    def key(text_encoder=components.text_encoder, **changes):
        cfg = dataclasses.replace(config.data, **changes)
        return cache_key(
            components.vae,
            text_encoder,
            components.tokenizer,
            data,
            cfg,
            False,
            config.cache_dtype,
        )

    assert key() == folder.name
    assert key(resolution=64) != folder.name
    with torch.no_grad():
        components.vae.decoder.conv_out.bias[0] += 1e-3
    assert key() == folder.name, "the decoder does not touch the latents: a decoder fine-tune keeps the cache"
    with torch.no_grad():
        components.vae.encoder.conv_out.bias[0] += 1e-3
    assert key() != folder.name
    key_before, key_without_embeddings = key(), key(text_encoder=None)
    assert key_without_embeddings != key_before  # a cache without embeddings is another cache
    with torch.no_grad():
        components.text_encoder.get_input_embeddings().weight[0, 0] += 1e-3
    assert key() != key_before
    # a run that trains its text encoder caches no embeddings: its key does not depend on the text encoder
    assert key(text_encoder=None) == key_without_embeddings


def test_killed_and_resumed_run_equals_the_straight_run(straight, tmp_path):
    _, reference = straight
    out = tmp_path / "resumed"
    crashed = _cli(f"output_dir={out}", *OVERRIDES, kill_after_checkpoint=4)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    # what a kill during a save leaves: a numbered folder without its marker, and a temporary folder
    shutil.copytree(ckpts / "checkpoint-4", ckpts / "checkpoint-5")
    (ckpts / "checkpoint-5" / MARKER).unlink()
    weights = ckpts / "checkpoint-5" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (ckpts / ".tmp-step-6").mkdir()
    # the run's training time carries over a resume: pretend the first segment took 1000 s
    state_file, manifest_file = ckpts / "checkpoint-4" / "trainer_state.json", ckpts / "checkpoint-4" / MARKER
    state4 = json.loads(state_file.read_text())
    assert 0 < state4["seconds"] < 1000
    state_file.write_text(json.dumps({**state4, "seconds": 1000.0}))
    manifest = json.loads(manifest_file.read_text())
    manifest["files"]["trainer_state.json"] = state_file.stat().st_size
    manifest_file.write_text(json.dumps(manifest))

    resumed = _cli(f"output_dir={out}", *OVERRIDES, "checkpoint.resume=latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {ckpts / 'checkpoint-4'} at step 4" in resumed.stdout
    assert not (ckpts / ".tmp-step-6").exists()
    for name in ("model.safetensors", "objects.safetensors", "objects.json"):
        assert (ckpts / "checkpoint-6" / name).is_file(), name
    assert not list((ckpts / "checkpoint-6").glob("custom_checkpoint_*")), "EMA/scheduler state was pickled"
    for rel in (
        "checkpoints/checkpoint-6/model.safetensors",
        "model/unet/diffusion_pytorch_model.safetensors",
    ):
        a, b = load_file(reference / rel), load_file(out / rel)
        assert a.keys() == b.keys()
        worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert worst <= 1e-6, f"{rel}: resumed run differs from the straight run by {worst}"
    state = json.loads((ckpts / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["consumed_batches"] == 6 and state["step"] == 6
    assert 1000 < state["seconds"] < 1000 + 600

    # resuming a finished run (or a stopped one with max_steps lowered to its last checkpoint) only exports
    shutil.rmtree(out / "model")
    before = sorted(p.name for p in ckpts.iterdir())
    again = _cli(f"output_dir={out}", *OVERRIDES, "checkpoint.resume=latest")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in ckpts.iterdir()) == before, "a finished run wrote new checkpoints"
    a = load_file(reference / "model/unet/diffusion_pytorch_model.safetensors")
    b = load_file(out / "model/unet/diffusion_pytorch_model.safetensors")
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= 1e-6, f"resuming at max_steps changed the weights by {worst}: it trained further"

    # resuming from an older folder would replace the later checkpoints one by one: refused up front
    config = load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={out}", *OVERRIDES, f"checkpoint.resume={ckpts / 'checkpoint-4'}"],
    )
    stamps = {p: p.stat().st_mtime_ns for p in ckpts.rglob("*")}
    with pytest.raises(FileExistsError, match=r"later checkpoints \(checkpoint-6\).*move them out"):
        unet_trainer.train(config)
    assert stamps == {p: p.stat().st_mtime_ns for p in ckpts.rglob("*")}


def _weights(folder: Path, component: str) -> dict[str, torch.Tensor]:
    (file,) = (folder / "model" / component).glob("*.safetensors")
    return load_file(file)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_text_encoder_trains_with_the_unet_and_resumes_exactly(straight, tmp_path):
    te = ["train_text_encoder=true", "text_encoder_lr=3e-3", "optim.max_steps=4", "validation.every_steps=2"]
    reference = tmp_path / "straight"
    config = load_config(
        unet_trainer.UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={reference}", *te]
    )
    unet_trainer.train(config)
    initial = unet_trainer.load_components(config)
    initial_te = {k: v.detach() for k, v in initial.text_encoder.state_dict().items()}
    trained_te = _weights(reference, "text_encoder")
    assert _max_difference(initial_te, trained_te) > 1e-4, "the text encoder did not train"
    assert (reference / "validation" / "step-2.png").is_file()
    (folder,) = (reference / "cache").iterdir()  # token ids only: the text encoder reads them as it trains
    cache = load_file(folder / "cache.safetensors")
    assert cache["embeds"].numel() == 0 and len(cache["input_ids"]) > 1
    data = load_splits(config.data)[0]
    args = (initial, data, config.data, reference, False, config.cache_dtype, False)
    loaded = load_or_build_cache(Accelerator(cpu=True), *args)
    with pytest.raises(ValueError, match="holds no text embeddings"):
        sample_inputs(loaded, torch.tensor([0]), 1.0, 0.0)
    # and without the flag it stays as it was (the `straight` run: same base, same seed)
    frozen = unet_trainer.load_components(straight[0]).text_encoder.state_dict()
    assert _max_difference(frozen, _weights(straight[1], "text_encoder")) == 0

    out = tmp_path / "resumed"
    crashed = _cli(f"output_dir={out}", *te, kill_after_checkpoint=2)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    resumed = _cli(f"output_dir={out}", *te, "checkpoint.resume=latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 2" in resumed.stdout
    for component in ("unet", "text_encoder"):
        worst = _max_difference(_weights(reference, component), _weights(out, component))
        assert worst <= 1e-6, f"{component}: resumed run differs from the straight run by {worst}"


def test_text_encoder_training_is_refused_with_lora(tmp_path):
    config = load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={tmp_path}", "train_text_encoder=true", "lora.rank=4"],
    )
    with pytest.raises(ValueError, match="lora.rank=0 or train_text_encoder=false"):
        unet_trainer.train(config)
    assert not (tmp_path / "cache").exists(), "the error must come before any work"


@pytest.mark.parametrize("bad", ["timestep_sampling=lognormal", "logit_std=0"])
def test_a_bad_timestep_sampling_is_refused_before_any_work(tmp_path, bad):
    config = load_config(
        unet_trainer.UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={tmp_path}", bad]
    )
    with pytest.raises(ValueError, match=r"timestep_sampling must be one of \['uniform', 'logit_normal'\]"):
        unet_trainer.train(config)
    assert not (tmp_path / "cache").exists(), "the error must come before any work"


@pytest.mark.parametrize("bad", ["edge_weight=-1", "edge_threshold=0", "edge_max_timestep=-1"])
def test_a_bad_edge_weighting_is_refused_before_any_work(tmp_path, bad):
    config = load_config(
        unet_trainer.UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={tmp_path}", bad]
    )
    with pytest.raises(
        ValueError, match="edge_weight must be >= 0 .*, edge_threshold > 0 and edge_max_timestep >= 0"
    ):
        unet_trainer.train(config)
    assert not (tmp_path / "cache").exists(), "the error must come before any work"


def test_edge_predicted_without_an_edge_weight_is_refused_before_any_work(tmp_path):
    config = load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={tmp_path}", "edge_predicted=true"],
    )
    with pytest.raises(
        ValueError, match="edge_predicted=true weighs outlines by edge_weight: set edge_weight > 0"
    ):
        unet_trainer.train(config)
    assert not (tmp_path / "cache").exists(), "the error must come before any work"


def test_edge_weighting_weighs_the_error_on_outline_cells(tmp_path, monkeypatch):
    """The same prediction error counts edge_weight + 1 times on an outline cell of the clean latents: an
    error only there raises the loss by that factor against an error of the same size on a flat cell."""
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # no noise: the epsilon target is 0

    def loss_with(error_cell: tuple[int, int], *overrides: str, size: float = 1.0) -> float:
        config = load_config(
            unet_trainer.UNetTrainConfig,
            config_file("train", "smoke-unet"),
            [f"output_dir={tmp_path}", "prediction_type=epsilon", "snr_gamma=0", *overrides],
        )
        c = unet_trainer.load_components(config)
        latents = torch.zeros(1, 4, 8, 8)
        latents[0, 1, 2:5, 2:5] = 3.0  # outline cells: the band around rows/columns 2-4
        error = torch.zeros_like(latents)
        error[0, 0, error_cell[0], error_cell[1]] = size

        def unet(model_input, t, embeds):  # predicts the (zero) noise right but at one cell
            return SimpleNamespace(sample=error)

        schedule = unet_trainer.DDPMScheduler.from_config(c.scheduler.config)
        return unet_trainer.diffusion_loss(
            unet, c, schedule, (latents, torch.zeros(1, 77, 32), None), config
        ).item()

    plain = loss_with((1, 1))
    assert loss_with((7, 7)) == pytest.approx(plain)  # no weighting: the cell does not matter
    edge, flat = loss_with((1, 1), "edge_weight=4"), loss_with((7, 7), "edge_weight=4")
    assert edge == pytest.approx(5 * flat) and flat == pytest.approx(1 / (4 * (64 + 4 * 24)))
    # with edge_predicted, the prediction's own outline counts: an error of 100 on the flat cell (7, 7) makes
    # the implied clean latents step there (by >= 100 * sqrt(beta_0) > 1.5 at any timestep), so its 2x2
    # corner neighbourhood joins the 24 outline cells: the cell weighs 5, over 4 * (64 + 4 * 28) in all
    drawn = loss_with((7, 7), "edge_weight=4", "edge_predicted=true", size=100)
    assert drawn == pytest.approx(100**2 * 5 / (4 * (64 + 4 * 28)))


def test_two_processes_under_accelerate_launch_end_with_equal_weights(tmp_path):
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2")
    launcher += ("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    result = _cli(f"output_dir={tmp_path}", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    card = (tmp_path / "model" / "README.md").read_text()
    metrics = json.loads(card.split("```json")[1].split("```")[0])
    sums = metrics["weight_checksum_per_process"]
    assert len(sums) == 2 and sums[0] == sums[1]
    StableDiffusionPipeline.from_pretrained(tmp_path / "model", safety_checker=None)


def test_random_masks_full_fraction_and_inpaint_conditioning():
    from latentforge.training.inpaint_masks import inpaint_conditioning, random_masks

    torch.manual_seed(0)
    assert random_masks(4, 8, 8, 1.0, torch.device("cpu")).eq(1).all()
    partial = random_masks(64, 8, 8, 0.0, torch.device("cpu"))
    assert set(partial.unique().tolist()) <= {0.0, 1.0}
    covered = partial.flatten(1).mean(1)
    assert (covered > 0).all() and (covered < 1).any()
    vae = Components.from_architecture("tiny").vae
    pixels = torch.rand(2, 3, 8, 8) * 2 - 1
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, :4] = 1  # repaint the top half
    cond = inpaint_conditioning(vae, pixels, masks, 2)
    assert cond.shape == (2, 5, 4, 4)
    assert cond[:, 0, :2].eq(1).all() and cond[:, 0, 2:].eq(0).all()  # the mask at latent size


def test_inpainting_unet_trains_and_loads_in_stock_inpaint_pipeline(tmp_path):
    from diffusers import StableDiffusionInpaintPipeline

    config = load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={tmp_path}", "base=tiny-inpaint", "optim.max_steps=2", "ema.enabled=false"],
    )
    out = unet_trainer.train(config)
    pipe = StableDiffusionInpaintPipeline.from_pretrained(out, safety_checker=None)
    assert pipe.unet.config.in_channels == 9
    image = torch.zeros(1, 3, 32, 32)
    mask = torch.ones(1, 1, 32, 32)
    result = pipe(
        "a red circle", image=image, mask_image=mask, num_inference_steps=2, output_type="np"
    ).images[0]
    assert result.shape == (32, 32, 3)
    initial = Components.from_architecture("tiny-inpaint", seed=0).unet
    assert not torch.equal(initial.conv_in.weight, pipe.unet.conv_in.weight)


def test_widening_a_text_to_image_unet_keeps_its_predictions_and_refuses_an_inpainting_one():
    from latentforge.training.inpaint_masks import widen_to_inpaint

    unet = Components.from_architecture("tiny", seed=0).unet.eval()
    latents, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    context = torch.randn(2, 7, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(latents, t, context).sample
        widen_to_inpaint(unet)
        extra = torch.randn(2, 5, 8, 8)  # any mask and masked-image latents: their weights start at zero
        after = unet(torch.cat([latents, extra], 1), t, context).sample
    assert unet.config.in_channels == 9 and unet.conv_in.weight.shape[1] == 9
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="inpainting U-Net already; drop inpaint_variant"):
        widen_to_inpaint(unet)
    with pytest.raises(ValueError, match="inpaint_variant=true needs full training"):
        unet_trainer.check_config(
            load_config(unet_trainer.UNetTrainConfig, None, ["inpaint_variant=true", "lora.rank=4"])
        )


def test_inpaint_variant_of_a_trained_model_trains_and_inpaints(tmp_path):
    from latentforge import InpaintPipeline

    base = tmp_path / "base"
    Components.from_architecture("tiny", seed=0).save_pretrained(base)
    config = load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={tmp_path / 'run'}", f"base={base}", "inpaint_variant=true", "optim.max_steps=2"],
    )
    out = unet_trainer.train(config)
    pipe = InpaintPipeline.from_pretrained(out)
    assert (
        pipe.unet.config.in_channels == 9
        and json.loads((out / "model_index.json").read_text())["_class_name"]
        == "StableDiffusionInpaintPipeline"
    )
    base_weight = Components.from_pretrained(base).unet.conv_in.weight
    trained = pipe.unet.conv_in.weight
    assert trained[:, 4:].abs().max() > 0  # the new channels learned from the masks
    assert (trained[:, :4] - base_weight).abs().max() < 0.05  # two small steps from the base's
    image = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    result = pipe("a red circle", image=image, mask_image=mask, num_inference_steps=2, output_type="np")
    assert result.images[0].shape == (32, 32, 3)
