"""Where a shapes-world model loses the shapes: its one-step clean-image prediction from noised held-out scenes.

For each timestep t, held-out scenes are encoded, noised to t (the model's training schedule), and the
U-Net, given each scene's own caption, predicts the clean latents in one step; these are decoded and the
shapes detector compares them with the scene (`objects_kept`: the same background and the same objects,
positions not compared). A sampler builds the image from these predictions, so a model whose predictions at
mid-noise timesteps (SNR ~0.05-0.5) already lose the shapes draws blobs however long it samples. Prints one
line per t (SNR, objects kept) and saves a grid: the scenes, then one row per t.

    python benchmarks/denoise_probe.py --model runs/default-model/default-model -o probe.png
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from latentforge.resources import DEFAULT_MODEL


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="model folder (default: the built-in)"
    )
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 300, 500, 700, 850, 950])
    parser.add_argument("--num-scenes", type=int, default=64, help="held-out scenes per timestep")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes and of the noise")
    parser.add_argument("--grid-scenes", type=int, default=8, help="scenes shown in the grid")
    parser.add_argument("-o", "--output", default="denoise_probe.png", help="the grid (PNG)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args(argv)


def probe(pipe, timesteps: list[int], num_scenes: int, seed: int):
    """({t: (snr, fraction of scenes whose objects the prediction keeps)}, scenes, {t: predicted images})."""
    from diffusers import DDPMScheduler

    from latentforge.data.shapes import Scene, caption_scene
    from latentforge.evaluation.reconstruction import heldout_shapes_images, objects_kept
    from latentforge.imaging import pil_to_tensor, to_pil
    from latentforge.models.tokenizer import tokenize
    from latentforge.training.losses import snr

    schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = schedule.config.prediction_type
    for t in timesteps:
        if not 0 <= t < schedule.config.num_train_timesteps:
            raise SystemExit(f"timesteps: {t} is outside [0, {schedule.config.num_train_timesteps})")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    scenes = heldout_shapes_images(num_scenes, size=size, seed=seed)
    rng = random.Random(seed)
    captions = [caption_scene(Scene.from_json(image.info["scene"]), rng) for image in scenes]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pixels = pil_to_tensor(scenes) * 2 - 1
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        context = pipe.text_encoder(tokenize(pipe.tokenizer, captions))[0]
        results, predictions = {}, {}
        for t in timesteps:
            step = torch.full((num_scenes,), t)
            noise = torch.randn(latents.shape, generator=generator)
            noisy = schedule.add_noise(latents, noise, step)
            out = pipe.unet(noisy, step, context).sample
            alpha = schedule.alphas_cumprod[t]
            if prediction == "v_prediction":
                clean = alpha.sqrt() * noisy - (1 - alpha).sqrt() * out
            elif prediction == "epsilon":
                clean = (noisy - (1 - alpha).sqrt() * out) / alpha.sqrt()
            else:  # "sample": the clean latents themselves
                clean = out
            decoded = pipe.vae.decode(clean / pipe.vae.config.scaling_factor).sample
            images = to_pil((decoded.clamp(-1, 1) + 1) / 2)
            kept = sum(objects_kept(s, p) for s, p in zip(scenes, images)) / num_scenes
            results[t] = (float(snr(alpha)), kept)
            predictions[t] = images
    return results, scenes, predictions


def main(argv=None) -> None:
    args = parse_args(argv)
    from latentforge import TextToImagePipeline
    from latentforge.imaging import make_grid

    pipe = TextToImagePipeline.from_pretrained(args.model)
    results, scenes, predictions = probe(pipe, args.timesteps, args.num_scenes, args.seed)
    print(f"{'t':>5} {'SNR':>10} {'objects kept':>13}")
    for t, (snr, kept) in results.items():
        print(f"{t:>5} {snr:>10.4f} {kept:>13.2f}")
    shown = min(args.grid_scenes, args.num_scenes)
    rows = [scenes[:shown], *(predictions[t][:shown] for t in args.timesteps)]
    make_grid([image for row in rows for image in row], columns=shown).save(args.output)
    print(f"grid: {args.output} (the scenes, then one row per timestep: {args.timesteps})")
    if args.json:
        table = {str(t): {"snr": snr, "objects_kept": kept} for t, (snr, kept) in results.items()}
        with open(args.json, "w") as f:
            json.dump(
                {
                    "model": str(args.model),
                    "num_scenes": args.num_scenes,
                    "seed": args.seed,
                    "results": table,
                },
                f,
            )


if __name__ == "__main__":
    main()
