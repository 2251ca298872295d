"""The fast preset (step caching + channels-last) stays within the tolerance it documents and turns off cleanly."""

import numpy as np
from pipeline_helpers import one_thread, quiet  # noqa: F401  (autouse fixture)

from latentforge import TextToImagePipeline
from latentforge.pipelines import step_cache
from latentforge.pipelines.sampling_defaults import read_defaults
from latentforge.resources import DEFAULT_MODEL

PROMPTS = ["a red circle to the left of a blue square", "two yellow triangles", "a green star"]


def test_fast_preset_stays_within_its_documented_tolerance_and_turns_off():
    pipe = quiet(TextToImagePipeline.from_pretrained(DEFAULT_MODEL))
    call = {**read_defaults(DEFAULT_MODEL).pipeline_kwargs(), "output_type": "np"}
    exact = pipe(PROMPTS, generator=[0, 1, 2], **call).images
    pipe.enable_fast()
    fast = pipe(PROMPTS, generator=[0, 1, 2], **call).images
    assert 1e-3 < np.abs(fast - exact).mean() < step_cache.MEAN_PIXEL_TOLERANCE
    pipe.disable_fast()
    assert pipe.unet.conv_in.weight.is_contiguous()
    np.testing.assert_array_equal(pipe(PROMPTS, generator=[0, 1, 2], **call).images, exact)
