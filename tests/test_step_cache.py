"""Step caching (DeepCache): exact at interval 1, close at interval 3, per call and per thread, and off cleanly."""

import math
import threading

import numpy as np
import pytest
import torch
from pipeline_helpers import (
    PROMPT,
    CallCounter,
    box_mask,
    one_thread,  # noqa: F401  (autouse fixture)
    quiet,
    random_image,
    reference,
    tiny,
)

from latentforge import ImageToImagePipeline, InpaintPipeline, TextToImagePipeline
from latentforge.pipelines import step_cache
from latentforge.pipelines.sampling_defaults import read_defaults
from latentforge.pipelines.schedulers import SCHEDULER_NAMES
from latentforge.resources import DEFAULT_MODEL

STEPS = 5
KWARGS = {"num_inference_steps": STEPS, "output_type": "np"}


@pytest.fixture
def components():
    return tiny(fresh=True)


def _task_call(task: str, components, **kwargs) -> np.ndarray:
    image, mask = random_image(1), box_mask()
    pipe = quiet(
        {"txt2img": TextToImagePipeline, "img2img": ImageToImagePipeline, "inpaint": InpaintPipeline}[task](
            components
        )
    )
    extra = {"txt2img": {}, "img2img": {"image": image}, "inpaint": {"image": image, "mask_image": mask}}[
        task
    ]
    return pipe(PROMPT, generator=[0, 1], num_images_per_prompt=2, **extra, **KWARGS, **kwargs).images


@pytest.mark.parametrize("task", ["txt2img", "img2img", "inpaint"])
def test_interval_1_gives_the_exact_images_for_every_task(task, components):
    exact = _task_call(task, components)
    step_cache.enable(components.unet, 1)
    np.testing.assert_array_equal(_task_call(task, components), exact)


@pytest.mark.parametrize(
    ("name", "task"),
    [("tiny", "txt2img"), ("tiny", "img2img"), ("tiny", "inpaint"), ("tiny-inpaint", "inpaint")],
)
def test_deep_modules_run_only_on_full_steps(name, task):
    components = tiny(name, fresh=True)
    step_cache.enable(components.unet, 2)
    deep, shallow = CallCounter(components.unet.mid_block.resnets[0]), CallCounter(components.unet.conv_out)
    images = _task_call(task, components, **({} if task == "txt2img" else {"strength": 1.0}))
    assert np.isfinite(images).all()
    assert len(shallow.batches) == STEPS
    assert len(deep.batches) == math.ceil(STEPS / 2)


@pytest.mark.parametrize(
    ("interval", "warmup", "full"), [(3, 0, [0, 3, 6]), (3, 2, [0, 1, 2, 5]), (2, 9, list(range(8)))]
)
def test_warmup_steps_run_in_full_before_the_interval_starts(interval, warmup, full, components):
    pipe = quiet(TextToImagePipeline(components))
    pipe.enable_step_cache(interval, warmup=warmup)
    deep = CallCounter(components.unet.mid_block.resnets[0])
    steps: list[int] = []

    def record(pipe, i, t, tensors):
        steps.append(len(deep.batches))

    pipe(PROMPT, generator=0, num_inference_steps=8, output_type="np", callback_on_step_end=record)
    assert [i for i in range(8) if steps[i] > (steps[i - 1] if i else 0)] == full
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="warmup must be an int >= 0"):
            pipe.enable_step_cache(3, warmup=bad)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_every_scheduler_samples_with_the_cache(scheduler, components):
    pipe = quiet(TextToImagePipeline(components)).set_scheduler(scheduler)
    exact = pipe(PROMPT, generator=0, **KWARGS).images
    pipe.enable_step_cache(2)
    deep, shallow = CallCounter(components.unet.mid_block.resnets[0]), CallCounter(components.unet.conv_out)
    cached = pipe(PROMPT, generator=0, **KWARGS).images
    assert np.isfinite(cached).all() and cached.shape == exact.shape
    assert len(deep.batches) == math.ceil(len(shallow.batches) / 2)  # Heun: two U-Net calls per step


def test_default_model_at_interval_3_stays_within_the_stated_tolerance():
    pipe = quiet(TextToImagePipeline.from_pretrained(DEFAULT_MODEL))
    call = {**read_defaults(DEFAULT_MODEL).pipeline_kwargs(), "output_type": "np"}
    prompts = ["a red circle to the left of a blue square", "two yellow triangles", "a green star"]
    exact = pipe(prompts, generator=[0, 1, 2], **call).images
    pipe.enable_step_cache(3)
    cached = pipe(prompts, generator=[0, 1, 2], **call).images
    difference = np.abs(cached - exact).mean()
    assert 1e-3 < difference < step_cache.MEAN_PIXEL_TOLERANCE  # the tolerance README "Speed" explains


def test_each_thread_keeps_its_own_cache(components):
    """A call paused with its cache full is not disturbed by another call that runs in the meantime."""
    pipe = quiet(TextToImagePipeline(components))
    pipe.enable_step_cache(3)
    alone = pipe(PROMPT, generator=0, **KWARGS).images
    other_alone = pipe("two yellow triangles", generator=7, **KWARGS).images
    paused, release, results = threading.Event(), threading.Event(), {}

    def hold(p, step, timestep, kwargs):
        if step == 1:  # after a full step and a cached one: the cache holds this call's deep features
            paused.set()
            release.wait(30)
        return kwargs

    thread = threading.Thread(
        target=lambda: results.update(
            image=pipe(PROMPT, generator=0, callback_on_step_end=hold, **KWARGS).images
        )
    )
    thread.start()
    assert paused.wait(60)
    other = pipe("two yellow triangles", generator=7, **KWARGS).images
    release.set()
    thread.join(60)
    np.testing.assert_array_equal(results["image"], alone)
    np.testing.assert_array_equal(other, other_alone)


def test_the_unet_runs_unchanged_outside_our_loop(components):
    """The hooks act only inside a call of ours: diffusers' pipeline over the same modules is unaffected."""
    from diffusers import StableDiffusionPipeline

    theirs = reference(StableDiffusionPipeline, components)
    call = {"prompt": PROMPT, "num_inference_steps": STEPS, "output_type": "np"}
    exact = theirs(generator=torch.Generator().manual_seed(0), **call).images
    step_cache.enable(components.unet, 3)
    np.testing.assert_array_equal(theirs(generator=torch.Generator().manual_seed(0), **call).images, exact)


def test_disable_removes_every_hook_and_restores_the_exact_images(components):
    pipe = quiet(TextToImagePipeline(components))
    exact = pipe(PROMPT, generator=0, **KWARGS).images
    pipe.enable_step_cache(2)
    pipe.enable_step_cache(3)  # replaces, does not stack
    assert step_cache.settings_of(components.unet) == (3, 0)
    assert not np.array_equal(pipe(PROMPT, generator=0, **KWARGS).images, exact)
    pipe.disable_step_cache()
    pipe.disable_step_cache()  # twice is fine
    assert step_cache.settings_of(components.unet) is None
    hooked = [
        name
        for name, module in components.unet.named_modules()
        if getattr(module, "_diffusers_hook", None) is not None
        and step_cache.HOOK_NAME in module._diffusers_hook.hooks
    ]
    assert hooked == []
    np.testing.assert_array_equal(pipe(PROMPT, generator=0, **KWARGS).images, exact)


@pytest.mark.parametrize("interval", [0, -1, 1.5, True, "3"])
def test_a_bad_interval_is_a_value_error(interval, components):
    with pytest.raises(ValueError, match="interval"):
        TextToImagePipeline(components).enable_step_cache(interval)
