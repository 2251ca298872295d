"""The model shipped in the package: loads offline, generates deterministically, and still scores on the
compositional benchmark above a floor set from its measured numbers (README, "Default model")."""

import hashlib
import io

import pytest
import torch

from latentforge.cli import main as cli_main
from latentforge.resources import DEFAULT_INPAINT_MODEL, DEFAULT_MODEL

# Measured on this set (2 prompts per category x 2 images, seed 0, the model's default settings): overall 0.58,
# single object 1.0 (4 images) and color_only 1.0 (the previous default models 0.54 and 1.0 at guidance 3, 0.17
# and 1.0 at guidance 5, then 0.17 and 0.96, 0.083 and 1.0, 0.083 and 0.92, 0.29 and 0.75, 0.083 and 0.58; a
# random model scores ~0). Floors are about half to two thirds of the measured numbers, to allow for CPU/BLAS
# differences; one image more or less right moves overall by ~0.04, single object by 0.25, color_only by ~0.04.
IN_DISTRIBUTION_FLOOR = {"overall": 0.35, "single_object": 0.5, "color_only": 0.7}
# VAE on the first VAE_IMAGES held-out images (seed 0): measured 37.0 dB and objects_kept 0.94 (the previous
# default model's VAE: 28.7 dB, 0.59).
VAE_IMAGES = 64
VAE_FLOOR = {"psnr_db": 34.0, "objects_kept": 0.85}
# The inpainting variant on INPAINT_CASES cases of the inpainting check (seed 0, its default settings):
# measured 0.94 (15 of 16: the asked object inside the mask) with the rest of the image kept in all 16 (the
# previous default variants: 0.875, 0.38, 0.31, 0.25; the last three would fail this floor).
INPAINT_CASES = 16
INPAINT_FLOOR = {"inpainting": 0.5, "outside_unchanged": 0.9}
MAX_DEFAULT_MODEL_MB = 50


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipe():
    from latentforge import TextToImagePipeline

    pipe = TextToImagePipeline.from_pretrained(DEFAULT_MODEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("model", [DEFAULT_MODEL, DEFAULT_INPAINT_MODEL])
def test_shipped_models_are_small_and_safetensors_only(model):
    files = [p for p in model.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_DEFAULT_MODEL_MB * 2**20
    assert any(p.suffix == ".safetensors" for p in files)
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]


def test_generates_64px_deterministically(pipe):
    def make(seed):
        return pipe(
            "a red circle", num_inference_steps=8, generator=torch.Generator().manual_seed(seed)
        ).images[0]

    first, again, other = make(0), make(0), make(1)
    assert first.size == (64, 64)
    assert _png_bytes(first) == _png_bytes(again)
    assert hashlib.sha256(_png_bytes(first)).digest() != hashlib.sha256(_png_bytes(other)).digest()


def test_cli_default_command_works(tmp_path):
    out = tmp_path / "out.png"
    assert (
        cli_main(["generate", "a red circle to the left of a blue square", "-o", str(out), "--seed", "0"])
        == 0
    )
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (64, 64)
        assert "parameters" in image.info


def test_compositional_score_stays_above_the_measured_floor(pipe):
    from latentforge.evaluation.compositional import evaluate_compositional, make_prompt_set
    from latentforge.pipelines.sampling_defaults import read_defaults

    defaults = read_defaults(DEFAULT_MODEL).pipeline_kwargs()  # "the default settings", as generate/eval use
    prompts = make_prompt_set(num_per_category=2, seed=0, held_out_per_category=0)
    result, _ = evaluate_compositional(pipe, prompts, images_per_prompt=2, seed=0, **defaults)
    scores = result.accuracy(held_out=False)
    for category, floor in IN_DISTRIBUTION_FLOOR.items():
        assert scores[category] >= floor, (category, scores)


def test_vae_reconstruction_stays_above_the_measured_floor(pipe):
    from latentforge.evaluation.reconstruction import evaluate_vae, heldout_shapes_images

    report = evaluate_vae(pipe.vae, heldout_shapes_images(VAE_IMAGES, size=64, seed=0))
    values = {m.name: m.value for m in report.metrics}
    for name, floor in VAE_FLOOR.items():
        assert values[name] >= floor, (name, values)


def test_the_inpainting_variant_shares_the_models_parts_and_inpaints_above_the_floor():
    from latentforge import InpaintPipeline
    from latentforge.evaluation.inpainting import evaluate_inpainting, make_inpaint_cases
    from latentforge.pipelines.sampling_defaults import read_defaults

    shared = [
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "tokenizer/vocab.json",
    ]
    for file in shared:  # the default model's own weights and vocabulary (one copy in git)
        assert (DEFAULT_MODEL / file).read_bytes() == (DEFAULT_INPAINT_MODEL / file).read_bytes(), file
    pipe = InpaintPipeline.from_pretrained(DEFAULT_INPAINT_MODEL)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.in_channels == 2 * pipe.vae.config.latent_channels + 1
    defaults = read_defaults(DEFAULT_INPAINT_MODEL)
    call = {**defaults.pipeline_kwargs(), "strength": defaults.strength, "mask_blur": defaults.mask_blur}
    report = evaluate_inpainting(pipe, make_inpaint_cases(INPAINT_CASES, seed=0), 0, 8, {}, **call)
    values = {m.name: m.value for m in report.metrics}
    for name, floor in INPAINT_FLOOR.items():
        assert values[name] >= floor, (name, values)
