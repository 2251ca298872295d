"""Text-to-image speed: latentforge's TextToImagePipeline vs diffusers' StableDiffusionPipeline.

Both pipelines share the same components (random weights of an architecture, or a model folder) and run
the same prompt, scheduler, steps and seed, alternating, in one process; the script prints the median
seconds per image of each, their ratio, and the largest pixel difference (they should make one image).

    python benchmarks/generate_speed.py --architecture small --steps 25
    python benchmarks/generate_speed.py --model path/to/sd15 --device cuda --dtype float16 --size 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--architecture", default="small", help="configs/models/<name> with random weights")
    source.add_argument("--model", help="diffusers model folder instead of an architecture")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--scheduler", default="dpmpp-2m")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--size", type=int, help="image side in pixels (default: the model's)")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per pipeline (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from latentforge import TextToImagePipeline
    from latentforge.models.components import Components

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.model:
        components = Components.from_pretrained(args.model, torch_dtype=dtype)
    else:
        components = Components.from_architecture(args.architecture, seed=0)
        if dtype != torch.float32:
            components.to(dtype=dtype)
    components.to(args.device)
    ours = TextToImagePipeline.from_components(components).set_scheduler(args.scheduler)
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
    size = args.size or components.unet.config.sample_size * components.vae_scale_factor
    call = {
        "prompt": "a red circle to the left of a blue square",
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "height": size,
        "width": size,
        "num_images_per_prompt": args.batch,
        "output_type": "np",
    }

    def timed(pipe) -> tuple[float, np.ndarray]:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(args.batch)]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        images = pipe(generator=generators, **call).images
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, images

    timed(ours), timed(theirs)  # warm-up: kernels, allocator, lazy initialisation
    times: dict[str, list[float]] = {"latentforge": [], "diffusers": []}
    for _ in range(args.repeats):  # alternate so that machine load hits both alike
        seconds, mine = timed(ours)
        times["latentforge"].append(seconds)
        seconds, reference = timed(theirs)
        times["diffusers"].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "model": args.model or args.architecture,
        "size": size,
        "steps": args.steps,
        "scheduler": args.scheduler,
        "batch": args.batch,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "seconds_per_call": median,
        "ratio_latentforge_over_diffusers": median["latentforge"] / median["diffusers"],
        "max_pixel_difference": float(np.abs(mine - reference).max()),
    }
    for name, seconds in median.items():
        print(f"{name:12s} {seconds:8.3f} s/call  ({args.steps / seconds:6.2f} steps/s)")
    print(f"ratio latentforge / diffusers: {result['ratio_latentforge_over_diffusers']:.3f}")
    print(f"max pixel difference: {result['max_pixel_difference']:.2e}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
