"""U-Net training throughput: latentforge's cached loop vs a loop shaped like diffusers' train_text_to_image.py.

Both train the same U-Net (random weights of an architecture) on the same built-in shapes images, batch size
and loss, alternating blocks of steps in one process. The diffusers-shaped loop decodes and transforms the
images, runs the VAE encoder and the text encoder on every step (as `examples/text_to_image/
train_text_to_image.py` does); ours reads posteriors and caption embeddings from the cache, which is built
once (its build time is printed too, with the number of steps after which caching has paid for itself).

    python benchmarks/train_throughput.py --architecture small --batch-size 32 --steps 8 --blocks 3

Caching removes exactly the encoders' share of a step, so the speedup is (U-Net + encoders) / U-Net. On
`small` (64 px images, a 12.6M U-Net on 16x16 latents) the VAE encoder, image decoding and the text encoder
cost ~12 ms per image against ~60 ms for the U-Net's forward + backward on 2 AVX2 cores: measured 1.17-1.24x
(2026-11, 2 shared CPU cores). The ratio grows with the VAE's share (larger images, a smaller U-Net).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="small", help="configs/models/<name> (random weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per loop (after one warm-up step)")
    parser.add_argument("--blocks", type=int, default=2, help="alternating blocks of steps per loop")
    parser.add_argument("--num-samples", type=int, default=256, help="shapes images to train on")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args()


def build(args: argparse.Namespace):
    """(config, components, train_data, cache, cache_seconds) for `args`: random weights, built-in shapes."""
    import torch
    from accelerate import Accelerator

    from latentforge.config_loader import load_config
    from latentforge.data.training_data import load_splits
    from latentforge.training import unet as trainer
    from latentforge.training.latent_cache import load_or_build_cache

    torch.manual_seed(0)
    resolution = {"tiny": 32}.get(args.architecture, 64)
    overrides = [f"base={args.architecture}", f"data.num_samples={args.num_samples}"]
    overrides += [f"data.resolution={resolution}", f"optim.batch_size={args.batch_size}"]
    config = load_config(trainer.UNetTrainConfig, None, overrides)
    components = trainer.load_components(config)
    train_data, _ = load_splits(config.data)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = load_or_build_cache(
            Accelerator(cpu=True), components, train_data, config.data, tmp, False, "float16"
        )
        cache_seconds = time.perf_counter() - t0
    return config, components, train_data, cache, cache_seconds


def cached_batches(cache, components, batch_size: int):
    """Our loop's inputs: posteriors and caption embeddings gathered from the cache."""
    import torch

    from latentforge.training.latent_cache import sample_inputs

    while True:
        for idx in torch.randperm(len(cache)).split(batch_size):
            if len(idx) == batch_size:
                yield sample_inputs(cache, idx, components.vae.config.scaling_factor, 0.1)


def diffusers_batches(components, train_data, config, batch_size: int):
    """train_text_to_image.py's inputs: images decoded and transformed by the loader, then the VAE encoder and
    the text encoder run inside the training step."""
    import torch

    from latentforge.data.training_data import image_loader

    tokenizer, vae, text_encoder = components.tokenizer, components.vae, components.text_encoder
    while True:
        for batch in image_loader(train_data, config.data, batch_size, shuffle=True):
            texts = ["" if torch.rand(()) < 0.1 else t for t in batch["text"]]
            ids = tokenizer(
                texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True
            )
            with torch.no_grad():
                latents = vae.encode(batch["pixel_values"]).latent_dist.sample() * vae.config.scaling_factor
                embeds = text_encoder(torch.tensor(ids.input_ids))[0]
            yield latents, embeds, None


def main() -> None:
    args = parse_args()
    import torch
    from diffusers import DDPMScheduler

    from latentforge.training import unet as trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    config, components, train_data, cache, cache_seconds = build(args)
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    unet = components.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def step(inputs) -> None:
        loss = trainer.diffusion_loss(unet, components, noise_scheduler, inputs, config)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    loops = {
        "latentforge (cached)": cached_batches(cache, components, args.batch_size),
        "diffusers-shaped (encode every step)": diffusers_batches(
            components, train_data, config, args.batch_size
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for batches in loops.values():
        step(next(batches))  # warm-up
    for _ in range(args.blocks):
        for name, batches in loops.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step(next(batches))  # getting the batch (loading, encoding) is part of the timed step
                seconds[name].append(time.perf_counter() - t0)
    report(args, seconds, cache_seconds, len(cache), torch.get_num_threads())


def report(
    args, seconds: dict[str, list[float]], cache_seconds: float, cache_images: int, threads: int
) -> None:
    rates = {name: args.batch_size / statistics.median(s) for name, s in seconds.items()}
    ours, theirs = rates.values()
    saved_per_step = args.batch_size / theirs - args.batch_size / ours
    result = {
        "architecture": args.architecture,
        "batch_size": args.batch_size,
        "threads": threads,
        "samples_per_second": {k: round(v, 2) for k, v in rates.items()},
        "speedup": round(ours / theirs, 2),
        "cache_build_seconds": round(cache_seconds, 1),
        "cache_images": cache_images,
        "cache_pays_off_after_steps": round(cache_seconds / saved_per_step, 1)
        if saved_per_step > 0
        else None,
    }
    for name, rate in rates.items():
        print(f"{name:40s} {rate:8.2f} samples/s")
    print(f"speedup {result['speedup']}x; cache of {cache_images} images built in {cache_seconds:.1f} s")
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
