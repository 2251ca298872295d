"""Memory/speed switches keep the images; half-precision NaN decodes are redone in fp32; save/load round trip."""

import warnings

import numpy as np
import pytest
import torch
from pipeline_helpers import (
    PROMPT,
    one_thread,  # noqa: F401  (autouse fixture)
    quiet,
    tiny,
)

from latentforge import TextToImagePipeline
from latentforge.pipelines import denoising

KWARGS = {"num_inference_steps": 2, "output_type": "np"}


@pytest.fixture
def pipe():
    """A pipeline over fresh components: the switches change the modules."""
    return quiet(TextToImagePipeline.from_components(tiny(fresh=True))).set_scheduler("euler")


def _images(pipe, batch: int = 1) -> np.ndarray:
    return pipe(PROMPT, generator=list(range(batch)), num_images_per_prompt=batch, **KWARGS).images


@pytest.mark.parametrize(
    "switch",
    [
        lambda p: p.enable_attention_slicing(1),
        lambda p: p.enable_attention_slicing("max"),
        lambda p: p.enable_vae_slicing(),
        lambda p: p.enable_channels_last(),
        lambda p: p.enable_model_cpu_offload(device="cpu"),
    ],
    ids=["attention-slicing-1", "attention-slicing-max", "vae-slicing", "channels-last", "cpu-offload-hooks"],
)
def test_switches_keep_the_images(pipe, switch):
    before = _images(pipe, batch=2)
    switch(pipe)
    after = _images(pipe, batch=2)
    again = _images(pipe, batch=2)  # hooks and processors survive a second call
    np.testing.assert_allclose(after, before, atol=1e-5)
    np.testing.assert_array_equal(again, after)


def test_attention_slicing_installs_sliced_processors_and_disabling_restores_sdpa(pipe):
    pipe.enable_attention_slicing(1)
    names = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert names == {"SlicedAttnProcessor"}
    pipe.disable_attention_slicing()
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}


def test_vae_tiling_decodes_large_latents_in_tiles(pipe):
    """Tiles of the tiny VAE are 32 px: a 128 px image is decoded in overlapping tiles, close to whole."""
    latents = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = denoising.decode_latents(pipe.vae, latents)
        pipe.enable_vae_tiling()
        calls = []
        handle = pipe.vae.decoder.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape))
        tiled = denoising.decode_latents(pipe.vae, latents)
        handle.remove()
    assert len(calls) > 1 and all(shape[-1] < 64 for shape in calls)
    assert tiled.shape == whole.shape == (1, 3, 128, 128)
    assert (tiled - whole).abs().mean() < 0.1  # seams are blended; a random VAE is not tile-invariant


def test_half_precision_vae_nan_is_redone_in_float32():
    vae = tiny(fresh=True).vae.to(torch.float16)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 1e4  # overflows fp16
    with torch.no_grad():
        assert not torch.isfinite(vae.decode((latents / vae.config.scaling_factor).half()).sample).all()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = denoising.decode_latents(vae, latents)
        reference = vae.float().decode(latents / vae.config.scaling_factor).sample
    assert any("decoding again in float32" in str(w.message) for w in caught)
    assert torch.isfinite(image).all()
    torch.testing.assert_close(image, reference)


def test_non_finite_latents_raise_instead_of_a_black_image():
    latents = torch.full((1, 4, 16, 16), float("nan"))
    with pytest.raises(FloatingPointError, match="latents contain NaN or Inf"):
        denoising.decode_latents(tiny().vae, latents)


def test_save_pretrained_round_trip(tmp_path):
    pipe = quiet(TextToImagePipeline.from_components(tiny()))
    pipe.save_pretrained(tmp_path / "model")
    loaded = quiet(TextToImagePipeline.from_pretrained(tmp_path / "model"))
    np.testing.assert_array_equal(_images(loaded), _images(pipe))
    half = TextToImagePipeline.from_pretrained(tmp_path / "model", torch_dtype=torch.float16)
    assert half.unet.dtype == half.vae.dtype == half.text_encoder.dtype == torch.float16
