"""The fast preset (step caching + channels-last) stays within the tolerance it documents and turns off cleanly."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch
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


def test_gpu_benchmark_script_runs_tiny_on_the_cpu(tmp_path):
    """benchmarks/gpu.sh end to end at a tiny size (not timed): one JSON row per mode and batch, exact rows
    with no pixel difference, step-cache rows with some (torch.compile is left to the manual CPU check)."""
    env = {
        **os.environ,
        **{"ARCH": "tiny", "SIZE": "32", "STEPS": "3", "BATCHES": "1 2", "DEVICE": "cpu", "DTYPE": "float32"},
        **{"MODES": "exact xformers step-cache-3", "REPEATS": "1", "OMP_NUM_THREADS": "1"},
    }
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"
    subprocess.run(
        ["bash", str(script), str(tmp_path / "out.json")], check=True, env=env, capture_output=True
    )
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [(r["mode"], r["batch"]) for r in rows] == [
        (m, b) for b in (1, 2) for m in ("exact", "step-cache-3")
    ]
    for row in rows:
        assert set(row["s_per_image"]) == {"latentforge", "diffusers"} and row["peak_mib"]["latentforge"] > 0
        assert (row["mean_pixel_diff_vs_exact"] > 0) == (row["mode"] == "step-cache-3")


def test_benchmark_fast_mode_is_the_preset():
    """benchmarks/speed_modes.py's `fast` mode sets what `pipe.enable_fast()` sets (it had drifted once)."""
    from pipeline_helpers import benchmark_script, tiny

    modes = benchmark_script("speed_modes")
    benchmarked, undo = modes.MODES["fast"](tiny(fresh=True))
    pipe = TextToImagePipeline.from_components(tiny(fresh=True))
    pipe.enable_fast()
    assert step_cache.settings_of(benchmarked.unet) == step_cache.settings_of(pipe.unet) is not None
    assert benchmarked.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    undo()
    assert step_cache.settings_of(benchmarked.unet) is None
