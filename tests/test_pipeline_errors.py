"""Every bad input of the issue raises ValueError / FileNotFoundError naming the argument, before any model runs."""

import shutil

import numpy as np
import pytest
import torch
from pipeline_helpers import (
    PROMPT,
    SIZE,
    box_mask,
    guarded_pipelines,
    one_thread,  # noqa: F401  (autouse fixture)
    random_image,
    tiny,
)

from latentforge import ImageToImagePipeline, InpaintPipeline, TextToImagePipeline
from latentforge.pipelines.schedulers import SCHEDULER_NAMES


@pytest.fixture(scope="module")
def pipes():
    with guarded_pipelines() as pipelines:
        yield pipelines


IMAGE = random_image()
MASK = box_mask()
INPUTS = {"txt2img": {}, "img2img": {"image": IMAGE}, "inpaint": {"image": IMAGE, "mask_image": MASK}}
COMMON_CASES = [
    ({"height": 33}, r"multiples of 2 \(the VAE scale factor"),
    ({"width": 31, "height": 32}, "multiples of 2"),
    ({"num_inference_steps": 0}, "num_inference_steps must be an int >= 1"),
    ({"guidance_scale": -1.0}, "guidance_scale must be a number >= 0"),
    ({"guidance_rescale": 1.5}, r"guidance_rescale must be in \[0, 1\]"),
    ({"prompt_embeds": torch.zeros(1, 77, 32)}, "exactly one of prompt and prompt_embeds; got both"),
    ({"prompt": None}, "exactly one of prompt and prompt_embeds; got neither"),
    (
        {"prompt": [PROMPT, PROMPT], "negative_prompt": ["a", "b", "c"]},
        "negative_prompt: the list has 3 entries but there are 2",
    ),
    ({"output_type": "jpeg"}, "output_type must be one of pil, np, pt, latent"),
    ({"num_images_per_prompt": 0}, "num_images_per_prompt must be an int >= 1"),
    ({"generator": [1, 2]}, "a list of 2 generators/seeds for 1 images"),
    ({"clip_skip": -1}, r"clip_skip must be None or an int in \[0, 4\]"),
    ({"latents": torch.zeros(1, 4, 8, 8)}, r"latents: expected shape \(1, 4, 16, 16\)"),
]


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
@pytest.mark.parametrize(("kwargs", "message"), COMMON_CASES)
def test_common_bad_inputs(pipes, task, kwargs, message):
    kwargs = {"prompt": PROMPT, **INPUTS[task], **kwargs}
    with pytest.raises(ValueError, match=message):
        pipes[task](**kwargs)


def test_clip_skip_beyond_the_text_encoder_is_rejected(pipes):
    with pytest.raises(ValueError, match=r"clip_skip must be None or an int in \[0, 4\]"):
        pipes["txt2img"](PROMPT, clip_skip=5)


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_strength_outside_zero_one(pipes, task, strength):
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        pipes[task](PROMPT, **INPUTS[task], strength=strength)


def test_strength_that_runs_no_step(pipes):
    with pytest.raises(ValueError, match=r"runs int\(0.5\) = 0 steps; raise strength to at least 0.2"):
        pipes["img2img"](PROMPT, IMAGE, strength=0.1, num_inference_steps=5)


def test_image_and_mask_of_different_sizes(pipes):
    with pytest.raises(ValueError, match="mask_image is 16x16 but image is 32x32"):
        pipes["inpaint"](PROMPT, IMAGE, box_mask(16, (2, 2, 8, 8)))


@pytest.mark.parametrize(
    "mask",
    [torch.ones(1, 3, SIZE, SIZE), np.ones((SIZE, SIZE, 3), np.float32), torch.ones(1, 2, SIZE, SIZE)],
    ids=["tensor-rgb", "numpy-rgb", "tensor-2ch"],
)
def test_mask_with_wrong_channels(pipes, mask):
    with pytest.raises(ValueError, match=r"mask_image: expected a mask \(1 channel"):
        pipes["inpaint"](PROMPT, IMAGE, mask)


def test_image_values_outside_zero_one(pipes):
    with pytest.raises(ValueError, match=r"image: values must be in \[0, 1\], got \[-1"):
        pipes["img2img"](PROMPT, torch.full((1, 3, SIZE, SIZE), -1.0))


def test_image_too_small_for_the_factor(pipes):
    with pytest.raises(ValueError, match="multiples of 2 .* from the image size 1x32"):
        pipes["img2img"](PROMPT, random_image().resize((1, 32)))


def test_missing_image_argument(pipes):
    with pytest.raises(ValueError, match="image is required for img2img"):
        pipes["img2img"](PROMPT)
    with pytest.raises(ValueError, match="mask_image is required"):
        pipes["inpaint"](PROMPT, IMAGE)


def test_unknown_scheduler_lists_the_names(pipes):
    with pytest.raises(
        ValueError, match="unknown name 'k_euler'; choose one of " + ", ".join(SCHEDULER_NAMES)
    ):
        pipes["txt2img"].set_scheduler("k_euler")


def test_karras_sigmas_on_a_zero_terminal_snr_model_warn():
    import warnings

    from diffusers import DDPMScheduler

    from latentforge.pipelines.schedulers import make_scheduler

    zero_snr = DDPMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction").config
    with pytest.warns(UserWarning, match=r"'dpmpp-2m-karras': Karras sigmas do not suit .* \(dpmpp-2m\)"):
        make_scheduler("dpmpp-2m-karras", zero_snr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where the sampler fits the schedule
        make_scheduler("dpmpp-2m", zero_snr)
        make_scheduler("dpmpp-2m-karras", DDPMScheduler().config)


def test_image_file_missing_or_not_an_image(pipes, tmp_path):
    with pytest.raises(FileNotFoundError, match="image: file .*nope.png does not exist"):
        pipes["img2img"](PROMPT, tmp_path / "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match="image: .*notes.png is not an image file"):
        pipes["img2img"](PROMPT, str(text))
    with pytest.raises(ValueError, match="mask_image: .*notes.png is not an image file"):
        pipes["inpaint"](PROMPT, IMAGE, text)


def test_nine_channel_model_needs_the_inpaint_pipeline():
    components = tiny("tiny-inpaint")
    for cls in (TextToImagePipeline, ImageToImagePipeline):
        with pytest.raises(ValueError, match="9-channel inpainting U-Net .* use InpaintPipeline"):
            cls.from_components(components)(
                PROMPT, **({"image": IMAGE} if cls is ImageToImagePipeline else {})
            )


def test_model_folder_with_a_missing_component(tmp_path):
    tiny().save_pretrained(tmp_path / "model")
    shutil.rmtree(tmp_path / "model" / "unet")
    with pytest.raises(FileNotFoundError, match="unet: folder .* is missing"):
        TextToImagePipeline.from_pretrained(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InpaintPipeline.from_pretrained(tmp_path / "no-such-model")


def test_xformers_needs_cuda(pipes):
    if torch.cuda.is_available():
        pytest.skip("the CPU-only error path")
    with pytest.raises(ValueError, match="xformers runs on CUDA devices only"):
        pipes["txt2img"].enable_xformers()
