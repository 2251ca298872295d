"""Step caching on the default model: sampling speed and the compositional score, with and without.

Runs the compositional benchmark's prompts and seeds (as `latentforge eval compositional`) on the exact path
and at each cache interval, on one pipeline in one process, batch by batch in turn (exact, interval a,
interval b, exact, ...) so that machine load hits every mode alike. Prints per mode the seconds spent in the
pipeline calls, the speed ratio against the exact path, the overall score (in-distribution and held-out) and
the mean absolute pixel difference (pixels in [0, 1]) from the exact images.

    python benchmarks/step_cache_quality.py [--model PATH] [--num-prompts 10] [--intervals 2 3 3:2]

An interval written N:W also runs the first W steps in full (`enable_step_cache(N, warmup=W)`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from latentforge.resources import DEFAULT_MODEL


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--num-prompts", type=int, default=10, help="prompts per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--intervals", type=_mode, nargs="+", default=[(3, 0)], help="N or N:W (warmup W)")
    return parser.parse_args()


def _mode(text: str) -> tuple[int, int]:
    interval, _, warmup = text.partition(":")
    return int(interval), int(warmup or 0)


def main() -> None:
    args = parse_args()
    import numpy as np

    from latentforge.evaluation.compositional import make_prompt_set, score_images
    from latentforge.evaluation.sampling import generate_images, load_pipeline
    from latentforge.pipelines.sampling_defaults import read_defaults

    settings = {**read_defaults(args.model).pipeline_kwargs(), "batch_size": args.batch_size}
    prompts = make_prompt_set(args.num_prompts, args.seed)
    pipe = load_pipeline(str(args.model), "cpu")
    modes = [None, *args.intervals]
    seconds = {mode: 0.0 for mode in modes}
    images: dict = {mode: [] for mode in modes}
    print(f"{len(prompts)} prompts, {settings}")
    generate_images(pipe, [p.text for p in prompts[:2]], seed=args.seed, **settings)  # warm-up
    for start in range(0, len(prompts), args.batch_size):
        texts = [p.text for p in prompts[start : start + args.batch_size]]
        for mode in modes:
            if mode is None:
                pipe.disable_step_cache()
            else:
                pipe.enable_step_cache(*mode)
            begin = time.perf_counter()
            images[mode] += generate_images(pipe, texts, seed=args.seed + start, **settings)
            seconds[mode] += time.perf_counter() - begin
    pipe.disable_step_cache()
    exact = [np.asarray(image, np.float32) / 255 for image in images[None]]
    print(f"{'mode':18s} {'seconds':>8s} {'speed':>6s} {'overall':>8s} {'held-out':>8s} {'mean |diff|':>11s}")
    for mode in modes:
        scores = score_images(prompts, images[mode]).summary()
        diff = np.mean(
            [np.abs(np.asarray(a, np.float32) / 255 - b).mean() for a, b in zip(images[mode], exact)]
        )
        name = "exact" if mode is None else f"cache {mode[0]}" + (f" warmup {mode[1]}" if mode[1] else "")
        held_out = scores.get("held_out", {}).get("overall", float("nan"))
        print(
            f"{name:18s} {seconds[mode]:8.2f} {seconds[None] / seconds[mode]:5.2f}x "
            f"{scores['in_distribution']['overall']:8.3f} {held_out:8.3f} {diff:11.4f}"
        )


if __name__ == "__main__":
    main()
