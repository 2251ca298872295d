"""Many pipeline calls on tiny random components: varied tasks (txt2img, img2img, inpaint), schedulers, sizes
and prompts, one shared set of modules. `thread_mismatches` runs them from 8 threads and compares with running
them in turn; `soak` runs hundreds and follows the process's resident memory and open file descriptors.

Used by tests/test_reliability_threads.py and benchmarks/reliability.py.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL.Image

TASKS = ("txt2img", "img2img", "inpaint")
SCHEDULERS = ("ddim", "euler-a", "dpmpp-2m", "unipc", "pndm", "heun", "dpmpp-2m-sde", "lms")
SIZES = (24, 32, 40, 48)  # multiples of 8 around the tiny models' 32
WORDS = ("red", "blue", "green", "circle", "square", "triangle", "left of", "above", "two", "three")


@dataclasses.dataclass(frozen=True)
class Call:
    task: str
    scheduler: str
    height: int
    width: int
    prompt: str
    seed: int
    steps: int


def make_calls(count: int, seed: int = 0) -> list[Call]:
    """`count` varied calls, the same for the same seed (prompts from 1 to 300 words: some past 77 tokens)."""
    rng = random.Random(seed)
    calls = []
    for i in range(count):
        words = rng.choice([1, 4, 12, 300])
        calls.append(
            Call(
                task=TASKS[i % len(TASKS)],
                scheduler=SCHEDULERS[rng.randrange(len(SCHEDULERS))],
                height=rng.choice(SIZES),
                width=rng.choice(SIZES),
                prompt=" ".join(rng.choice(WORDS) for _ in range(words)),
                seed=rng.randrange(2**31),
                steps=rng.choice([2, 3]),
            )
        )
    return calls


class Runner:
    """Runs `Call`s on one set of modules: a pipeline per task (`from_pipe`, shared modules), and per call a
    view of it with the call's scheduler (`from_pipe(...).set_scheduler`), as a server would."""

    def __init__(self, components) -> None:
        from latentforge import ImageToImagePipeline, InpaintPipeline, TextToImagePipeline

        base = TextToImagePipeline.from_components(components)
        base.set_progress_bar_config(disable=True)
        self.pipes = {
            "txt2img": base,
            "img2img": ImageToImagePipeline.from_pipe(base),
            "inpaint": InpaintPipeline.from_pipe(base),
        }

    def __call__(self, call: Call) -> np.ndarray:
        pipe = type(self.pipes[call.task]).from_pipe(self.pipes[call.task]).set_scheduler(call.scheduler)
        kwargs = {"num_inference_steps": call.steps, "generator": call.seed, "output_type": "np"}
        if call.task == "txt2img":
            kwargs |= {"height": call.height, "width": call.width}
        else:
            kwargs["image"] = _image(call.seed, call.height, call.width)
        if call.task == "inpaint":
            mask = np.zeros((call.height, call.width), np.uint8)
            mask[call.height // 4 : -call.height // 4, call.width // 4 :] = 255
            kwargs["mask_image"] = PIL.Image.fromarray(mask)
        return pipe(call.prompt, **kwargs).images[0]


def _image(seed: int, height: int, width: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    small = PIL.Image.fromarray(rng.integers(0, 256, (max(height // 4, 1), max(width // 4, 1), 3), np.uint8))
    return small.resize((width, height), PIL.Image.BICUBIC)


def thread_mismatches(runner: Runner, calls: list[Call], threads: int = 8) -> tuple[int, float]:
    """(calls whose image differs from the sequential run's, largest pixel difference) with `threads` at once."""
    sequential = [runner(call) for call in calls]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        concurrent = list(pool.map(runner, calls))
    differences = [float(np.abs(a - b).max()) for a, b in zip(sequential, concurrent)]
    return sum(d > 0 for d in differences), max(differences)


def rss_bytes() -> int:
    """Resident memory of this process (VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def soak(runner: Runner, calls: list[Call], warmup: int, every: int = 25) -> dict[str, float]:
    """Run `calls` in turn; RSS and open fds after `warmup` calls and then every `every` calls. Growth is the
    largest later value relative to the one after warm-up."""
    samples = []
    for i, call in enumerate(calls, 1):
        image = runner(call)
        assert image.shape == (call.height, call.width, 3) and np.isfinite(image).all(), call
        if i >= warmup and (i - warmup) % every == 0 or i == len(calls):
            gc.collect()
            samples.append((i, rss_bytes(), open_fds()))
    (_, rss0, fd0), rest = samples[0], samples[1:]
    rss_max, fd_max = max(r for _, r, _ in rest), max(f for _, _, f in rest)
    return {
        "calls": len(calls),
        "warmup_calls": warmup,
        "rss_after_warmup_mb": rss0 / 2**20,
        "rss_max_after_warmup_mb": rss_max / 2**20,
        "rss_end_mb": rest[-1][1] / 2**20,
        "rss_growth_pct": 100 * (rss_max - rss0) / rss0,
        "fd_after_warmup": fd0,
        "fd_growth": fd_max - fd0,
    }
