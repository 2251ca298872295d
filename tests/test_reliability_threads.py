"""Concurrency (issue 21 item 4): one set of modules serves 8 threads with the images of running the calls in
turn, while each call picks its own task (txt2img, img2img, inpaint), scheduler, size and prompt; calls leak no
file descriptors. The 500-call soak with memory figures is `benchmarks/reliability.py --soak-calls 500`."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import one_thread, tiny  # noqa: F401  (autouse fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pipeline_load  # noqa: E402

PROMPT = "two red circles above a blue square"


@pytest.fixture(scope="module")
def runner():
    return pipeline_load.Runner(tiny(fresh=True))


def test_eight_threads_switching_tasks_and_schedulers_give_the_sequential_images(runner):
    calls = pipeline_load.make_calls(24, seed=3)
    assert {c.task for c in calls} == set(pipeline_load.TASKS) and len({c.scheduler for c in calls}) >= 5
    mismatches, worst = pipeline_load.thread_mismatches(runner, calls, threads=8)
    assert (mismatches, worst) == (0, 0.0), f"{mismatches} of {len(calls)} calls differ (up to {worst})"
    # the calls are different work, so a mix-up between threads would show
    first = [runner(call) for call in calls[:3]]
    assert all(np.abs(first[0][:16, :16] - other[:16, :16]).max() > 1e-3 for other in first[1:])


def test_switching_the_shared_pipelines_scheduler_mid_calls_gives_each_call_one_whole_scheduler(runner):
    """A call copies the scheduler once as it starts: while another thread switches the shared pipeline between
    two schedulers, every call's image is exactly that of one of them, never a mix."""
    pipe = runner.pipes["txt2img"]
    kwargs = {"num_inference_steps": 3, "generator": 11, "output_type": "np"}
    expected = [pipe.set_scheduler(name)(PROMPT, **kwargs).images[0] for name in ("ddim", "dpmpp-2m")]
    assert np.abs(expected[0] - expected[1]).max() > 1e-3
    stop = threading.Event()

    def switch() -> None:
        while not stop.is_set():
            for name in ("ddim", "dpmpp-2m"):
                pipe.set_scheduler(name)

    switcher = threading.Thread(target=switch)
    switcher.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            images = list(pool.map(lambda _: pipe(PROMPT, **kwargs).images[0], range(16)))
    finally:
        stop.set()
        switcher.join()
    for image in images:
        assert any(np.array_equal(image, e) for e in expected), "a call mixed two schedulers"


def test_calls_leave_no_file_descriptors_open(runner):
    calls = pipeline_load.make_calls(24, seed=7)
    for call in calls[:6]:  # warm-up: lazy imports open their files once
        runner(call)
    before = pipeline_load.open_fds()
    for call in calls[6:]:
        runner(call)
    assert pipeline_load.open_fds() == before
