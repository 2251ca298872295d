"""Text-to-image speed and throughput: latentforge's TextToImagePipeline vs diffusers' StableDiffusionPipeline.

Both pipelines share the same components (random weights of an architecture, or a model folder) and run the
same prompt, scheduler, steps and seeds, alternating, in one process. For every speed mode (`speed_modes.py`)
and batch size the script prints seconds per image of each, images/s, latentforge's speed-up over diffusers
(diffusers' seconds / ours), the peak memory of the calls (RSS on CPU, `torch.cuda.max_memory_allocated` on
CUDA) and the largest and mean pixel difference (pixels in [0, 1]) of our images from our exact path.

    python benchmarks/generate_speed.py --architecture small --steps 25
    python benchmarks/generate_speed.py --architecture sd15 --size 256 --steps 10 --modes exact channels-last fast
    python benchmarks/generate_speed.py --model path/to/sd15 --device cuda --dtype float16 --size 512 --batch 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

from speed_modes import CUDA_ONLY, MODES


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--architecture", default="small", help="configs/models/<name> with random weights")
    source.add_argument("--model", help="diffusers model folder instead of an architecture")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--scheduler", default="dpmpp-2m")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--size", type=int, help="image side in pixels (default: the model's)")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1], help="images per call (several: throughput)"
    )
    parser.add_argument("--modes", nargs="+", default=["exact", "step-cache-3", "fast"], choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per pipeline (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args(argv)


class PeakMemory:
    """Peak memory in MiB while the block runs: CUDA allocator peak, or process RSS sampled every 5 ms."""

    def __init__(self, device: str):
        self.cuda, self.peak, self._done = device.startswith("cuda"), 0.0, threading.Event()

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._done.wait(0.005):
            with open("/proc/self/statm") as statm:
                self.peak = max(self.peak, int(statm.read().split()[1]) * page / 2**20)

    def __exit__(self, *exc) -> None:
        import torch

        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._done.set()
            self._thread.join()


def load_components(args):
    import torch

    from latentforge.models.components import Components

    dtype = getattr(torch, args.dtype)
    if args.model:
        components = Components.from_pretrained(args.model, torch_dtype=dtype)
    else:
        components = Components.from_architecture(args.architecture, seed=0)
    components.to(args.device)
    return components.to(dtype=dtype) if components.dtype != dtype else components


def pipelines(components, scheduler_name: str):
    """(ours, diffusers') over `components`, progress bars off."""
    from diffusers import StableDiffusionPipeline

    from latentforge import TextToImagePipeline

    ours = TextToImagePipeline.from_components(components).set_scheduler(scheduler_name)
    theirs = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=type(ours.scheduler).from_config(ours.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def timed(pipe, call: dict, batch: int, device: str):
    """(seconds, peak MiB, images (B, H, W, 3) in [0, 1]) of one call with seeds 0..batch-1."""
    import torch

    generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        images = pipe(generator=generators, num_images_per_prompt=batch, **call).images
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, memory.peak, images


def measure_mode(components, args, call: dict, batch: int, exact_images) -> tuple[dict, object]:
    """Ours and diffusers in one mode, alternating; the row of the table and our images."""
    import numpy as np

    moded, undo = MODES[args.mode_name](components)
    try:
        ours, theirs = pipelines(moded, args.scheduler)
        timed(ours, call, batch, args.device), timed(theirs, call, batch, args.device)  # warm-up / compile
        runs: dict[str, list] = {"latentforge": [], "diffusers": []}
        for _ in range(args.repeats):
            for name, pipe in (("latentforge", ours), ("diffusers", theirs)):
                runs[name].append(timed(pipe, call, batch, args.device))
    finally:
        undo()
    images = runs["latentforge"][-1][2]
    reference = images if exact_images is None else exact_images
    seconds = {name: statistics.median(r[0] for r in values) / batch for name, values in runs.items()}
    row = {
        "mode": args.mode_name,
        "batch": batch,
        "s_per_image": seconds,
        "images_per_s": {name: 1 / value for name, value in seconds.items()},
        "it_per_s": {name: args.steps / (value * batch) for name, value in seconds.items()},
        "speedup_over_diffusers": seconds["diffusers"] / seconds["latentforge"],
        "peak_mib": {name: max(r[1] for r in values) for name, values in runs.items()},
        "max_pixel_diff_vs_exact": float(np.abs(images - reference).max()),
        "mean_pixel_diff_vs_exact": float(np.abs(images - reference).mean()),
    }
    return row, images


def print_row(row: dict) -> None:
    s, m = row["s_per_image"], row["peak_mib"]
    print(
        f"{row['mode']:22s} {row['batch']:5d} {s['latentforge']:9.3f} {s['diffusers']:9.3f} "
        f"{row['speedup_over_diffusers']:7.2f}x {row['images_per_s']['latentforge']:8.2f} "
        f"{m['latentforge']:8.0f} {m['diffusers']:8.0f} {row['max_pixel_diff_vs_exact']:8.1e} "
        f"{row['mean_pixel_diff_vs_exact']:8.1e}"
    )


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    components = load_components(args)
    size = args.size or components.unet.config.sample_size * components.vae_scale_factor
    call = {
        "prompt": "a red circle to the left of a blue square",
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "height": size,
        "width": size,
        "output_type": "np",
    }
    print(
        f"{args.model or args.architecture}, {size}px, {args.steps} steps {args.scheduler}, {args.device} "
        f"{args.dtype}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'mode':22s} {'batch':>5s} {'ours s/im':>9s} {'diff s/im':>9s} {'speedup':>8s} {'ours im/s':>8s} "
        f"{'ours MiB':>8s} {'diff MiB':>8s} {'max diff':>8s} {'mean diff':>8s}"
    )
    rows = []
    for batch in args.batch:
        exact_images = None
        for mode in ["exact", *(m for m in args.modes if m != "exact")]:
            if mode in CUDA_ONLY and not args.device.startswith("cuda"):
                continue
            args.mode_name = mode
            try:
                row, images = measure_mode(components, args, call, batch, exact_images)
            except Exception as err:  # e.g. xformers not installed: report the row, keep measuring
                print(f"{mode:22s} {batch:5d} failed: {type(err).__name__}: {str(err)[:120]}")
                rows.append({"mode": mode, "batch": batch, "error": f"{type(err).__name__}: {err}"})
                continue
            exact_images = images if mode == "exact" else exact_images
            rows.append(row)
            print_row(row)
    result = {"settings": {k: v for k, v in vars(args).items() if k != "mode_name"}, "rows": rows}
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    return rows


if __name__ == "__main__":
    main()
