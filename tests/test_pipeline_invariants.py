"""Behaviour the issue promises beyond parity: seeds, guidance passes, img2img steps, paste-back, threads."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from pipeline_helpers import (
    PROMPT,
    SIZE,
    CallCounter,
    box_mask,
    generator,
    one_thread,  # noqa: F401  (autouse fixture)
    quiet,
    random_image,
    tiny,
)

from latentforge import ImageToImagePipeline, InpaintPipeline, TextToImagePipeline
from latentforge.pipelines.image_inputs import blur_mask, to_tensor


@pytest.fixture(scope="module")
def txt2img():
    return quiet(TextToImagePipeline.from_components(tiny())).set_scheduler("euler-a")


def test_image_i_does_not_depend_on_the_batch(txt2img):
    """Per-image seeds: image 1 of a batch of 3 equals the same seed alone (ancestral noise included)."""
    batch = txt2img(
        PROMPT, generator=[10, 11, 12], num_images_per_prompt=3, num_inference_steps=3, output_type="np"
    )
    batch = batch.images
    alone = txt2img(PROMPT, generator=[11], num_inference_steps=3, output_type="np").images
    other = txt2img(PROMPT, generator=[13], num_inference_steps=3, output_type="np").images
    assert np.abs(batch[1] - alone[0]).max() < 1e-5
    assert np.abs(batch[1] - other[0]).max() > 1e-2  # seeds matter


def test_inpaint_image_i_does_not_depend_on_the_batch():
    """Also for inpainting, where diffusers samples every image's latents from the first generator."""
    pipe = quiet(InpaintPipeline.from_components(tiny("tiny-inpaint"))).set_scheduler("euler-a")
    inputs = {"image": random_image(4), "mask_image": box_mask(), "strength": 0.8, "num_inference_steps": 3}
    batch = pipe(PROMPT, generator=[5, 6], num_images_per_prompt=2, output_type="np", **inputs).images
    alone = pipe(PROMPT, generator=[6], output_type="np", **inputs).images
    assert np.abs(batch[1] - alone[0]).max() < 1e-5


@pytest.mark.parametrize(("guidance", "batch"), [(0.0, 1), (1.0, 1), (3.0, 2)])
def test_guidance_up_to_one_runs_one_unet_pass_per_step(txt2img, guidance, batch):
    counter = CallCounter(txt2img.unet)
    try:
        txt2img(PROMPT, guidance_scale=guidance, num_inference_steps=4, generator=0, output_type="latent")
    finally:
        counter.remove()
    assert counter.batches == [batch] * 4  # one call per step; guidance doubles the batch, never the calls


@pytest.mark.parametrize(
    ("steps", "strength", "expected"), [(10, 0.35, 3), (10, 1.0, 10), (4, 0.26, 1), (7, 0.5, 3)]
)
def test_img2img_runs_int_steps_times_strength(steps, strength, expected):
    pipe = quiet(ImageToImagePipeline.from_components(tiny()))  # DDIM: one U-Net call per step
    counter = CallCounter(pipe.unet)
    try:
        pipe(
            PROMPT,
            random_image(),
            strength=strength,
            num_inference_steps=steps,
            generator=0,
            output_type="latent",
        )
    finally:
        counter.remove()
    assert len(counter.batches) == expected == int(steps * strength)


def test_img2img_image_size_is_rounded_down_to_the_factor(txt2img):
    """As diffusers' VaeImageProcessor: without height/width, the image's size rounded down to the VAE factor
    (2 for the tiny model), so a 33x31 photo is drawn at 32x30 instead of being refused."""
    pipe = ImageToImagePipeline.from_pipe(txt2img)
    out = pipe(PROMPT, random_image().resize((33, 31)), num_inference_steps=2, generator=0, output_type="pt")
    assert out.images.shape[-2:] == (30, 32)


@pytest.mark.parametrize("model", ["tiny", "tiny-inpaint"])
@pytest.mark.parametrize("mask_blur", [0, 2])
def test_paste_back_keeps_unmasked_pixels_exactly(model, mask_blur):
    pipe = quiet(InpaintPipeline.from_components(tiny(model)))
    image, mask = random_image(5), box_mask()
    inputs = {"num_inference_steps": 2, "generator": 1, "mask_blur": mask_blur}
    pasted = np.asarray(pipe(PROMPT, image, mask, **inputs).images[0])
    raw = np.asarray(pipe(PROMPT, image, mask, paste_back=False, **inputs).images[0])
    keep = blur_mask(to_tensor(mask, "mask", 1), mask_blur)[0, 0].numpy() == 0
    assert keep.sum() > SIZE * SIZE // 3
    assert np.array_equal(pasted[keep], np.asarray(image)[keep])
    assert not np.array_equal(raw[keep], np.asarray(image)[keep])  # without paste-back the VAE changes them
    np.testing.assert_array_equal(
        pasted[~keep & (blur_mask(to_tensor(mask, "m", 1), mask_blur)[0, 0] == 1).numpy()],
        raw[~keep & (blur_mask(to_tensor(mask, "m", 1), mask_blur)[0, 0] == 1).numpy()],
    )


def test_soft_mask_blends_generated_and_original_pixels():
    """A grey mask m gives m * generated + (1 - m) * original after paste-back."""
    pipe = quiet(InpaintPipeline.from_components(tiny()))
    image = random_image(6)
    grey = np.full((SIZE, SIZE), 0.25, np.float32)
    grey[8:24, 8:24] = 1.0
    inputs = {"num_inference_steps": 2, "generator": 2, "output_type": "pt"}
    generated = pipe(PROMPT, image, grey, paste_back=False, **inputs).images
    blended = pipe(PROMPT, image, grey, **inputs).images
    original = to_tensor(image, "image", 3)
    mask = torch.from_numpy(grey)[None, None]
    torch.testing.assert_close(blended, mask * generated + (1 - mask) * original, atol=1e-6, rtol=0)


def test_from_pipe_shares_modules_but_not_the_scheduler_choice(txt2img):
    img2img = ImageToImagePipeline.from_pipe(txt2img)
    inpaint = InpaintPipeline.from_pipe(img2img)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(img2img, name) is getattr(txt2img, name) is getattr(inpaint, name)
    inpaint.set_scheduler("unipc")
    assert type(inpaint.scheduler).__name__ == "UniPCMultistepScheduler"
    assert type(txt2img.scheduler).__name__ == "EulerAncestralDiscreteScheduler"


def test_eight_threads_give_the_sequential_images():
    """One pipeline, eight concurrent calls with a multistep (stateful) scheduler, equal to running them in turn."""
    pipe = quiet(TextToImagePipeline.from_components(tiny())).set_scheduler("dpmpp-2m")
    prompts = [
        f"{n} {color} squares" for n, color in zip(["two", "three", "four"] * 3, ["red", "blue", "green"] * 3)
    ]

    def generate(i: int) -> np.ndarray:
        return pipe(prompts[i], generator=100 + i, num_inference_steps=2, output_type="np").images[0]

    sequential = [generate(i) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(generate, range(8)))
    for i in range(8):
        np.testing.assert_array_equal(concurrent[i], sequential[i])
    assert np.abs(sequential[0] - sequential[1]).max() > 1e-2


def test_output_types_agree(txt2img):
    kwargs = {"num_inference_steps": 2, "generator": 4}
    pil = txt2img(PROMPT, **kwargs).images
    array = txt2img(PROMPT, output_type="np", **kwargs).images
    tensor = txt2img(PROMPT, output_type="pt", **kwargs).images
    latents = txt2img(PROMPT, output_type="latent", **kwargs).images
    assert latents.shape == (1, 4, SIZE // 2, SIZE // 2)
    assert tensor.shape == (1, 3, SIZE, SIZE) and array.shape == (1, SIZE, SIZE, 3)
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy(), array, atol=0)
    np.testing.assert_array_equal(np.asarray(pil[0]), (array[0] * 255).round().astype(np.uint8))


def test_callback_sees_every_step_and_can_replace_latents(txt2img):
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((step, tensors["latents"].shape))
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 2 else None

    out = txt2img(
        PROMPT, num_inference_steps=3, generator=0, output_type="latent", callback_on_step_end=callback
    )
    assert [s for s, _ in seen] == [0, 1, 2]
    assert torch.count_nonzero(out.images) == 0


def test_latents_argument_is_the_starting_noise(txt2img):
    noise = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=generator(8))
    pipe = quiet(TextToImagePipeline.from_pipe(txt2img)).set_scheduler("ddim")  # no noise after the start
    given = pipe(PROMPT, latents=noise, num_inference_steps=2, output_type="np").images
    seeded = pipe(PROMPT, generator=8, num_inference_steps=2, output_type="np").images
    other = pipe(PROMPT, latents=noise * 0.5, num_inference_steps=2, output_type="np").images
    np.testing.assert_array_equal(given, seeded)  # seed 8 draws exactly `noise`
    assert np.abs(given - other).max() > 1e-2
