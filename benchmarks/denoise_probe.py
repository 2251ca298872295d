"""Where a shapes-world model loses the shapes: its one-step clean-image prediction from noised held-out scenes.

For each timestep t, held-out scenes are encoded, noised to t (the model's training schedule), and the
U-Net, given each scene's own caption, predicts the clean latents in one step; these are decoded and the
shapes detector compares them with the scene (`objects_kept`: the same background and the same objects,
positions not compared). A sampler builds the image from these predictions, so a model whose predictions at
mid-noise timesteps (SNR ~0.05-0.5) already lose the shapes draws blobs however long it samples.

Whether the shapes come from the words: the same noised scenes are denoised again with every shape word of
the captions replaced by the next one (circle -> square -> triangle -> star -> circle), and "swapped followed"
is the share of predictions whose objects are those of the swapped scene (the same boxes and colours, the
swapped shapes). Where the noise hides the outlines (t >= 500) a model that reads the shape words follows the
swap; one that only reads the noisy latents keeps the original shapes. Prints one line per t (SNR, objects
kept, swapped followed) and saves a grid: the scenes, then one row per t.

    python benchmarks/denoise_probe.py --model runs/default-model/default-model -o probe.png
"""

from __future__ import annotations

import argparse
import json
import random
import re
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


def swap_shapes(scene, caption: str):
    """(`scene` with every object's shape replaced by the next in SHAPES, `caption` with its words so replaced)."""
    from dataclasses import replace

    from latentforge.data.shapes_grammar import SHAPES

    following = dict(zip(SHAPES, SHAPES[1:] + SHAPES[:1]))
    objects = [replace(o, shape=following[o.shape]) for o in scene.objects]
    words = re.sub(r"\b(" + "|".join(SHAPES) + r")", lambda m: following[m.group(1)], caption)
    return replace(scene, objects=objects), words


def probe(pipe, timesteps: list[int], num_scenes: int, seed: int):
    """({t: (snr, share of scenes whose objects the prediction keeps, share whose prediction from the
    shape-swapped captions shows the swapped scene)}, scenes, {t: predicted images})."""
    from diffusers import DDPMScheduler

    from latentforge.data.shapes import Scene, caption_scene, render_scene
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
    ground_truth = [Scene.from_json(image.info["scene"]) for image in scenes]
    captions = [caption_scene(scene, rng) for scene in ground_truth]
    swapped = [swap_shapes(scene, caption) for scene, caption in zip(ground_truth, captions)]
    swapped_scenes = [render_scene(scene) for scene, _ in swapped]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pixels = pil_to_tensor(scenes) * 2 - 1
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        contexts = [pipe.text_encoder(tokenize(pipe.tokenizer, words))[0] for words in
                    (captions, [words for _, words in swapped])]  # fmt: skip

        def predict(noisy, step, context, alpha):
            out = pipe.unet(noisy, step, context).sample
            if prediction == "v_prediction":
                clean = alpha.sqrt() * noisy - (1 - alpha).sqrt() * out
            elif prediction == "epsilon":
                clean = (noisy - (1 - alpha).sqrt() * out) / alpha.sqrt()
            else:  # "sample": the clean latents themselves
                clean = out
            decoded = pipe.vae.decode(clean / pipe.vae.config.scaling_factor).sample
            return to_pil((decoded.clamp(-1, 1) + 1) / 2)

        def share(originals, images) -> float:
            return sum(objects_kept(s, p) for s, p in zip(originals, images)) / num_scenes

        results, predictions = {}, {}
        for t in timesteps:
            step = torch.full((num_scenes,), t)
            noise = torch.randn(latents.shape, generator=generator)
            noisy = schedule.add_noise(latents, noise, step)
            alpha = schedule.alphas_cumprod[t]
            images, swapped_images = (predict(noisy, step, c, alpha) for c in contexts)
            results[t] = (float(snr(alpha)), share(scenes, images), share(swapped_scenes, swapped_images))
            predictions[t] = images
    return results, scenes, predictions


def main(argv=None) -> None:
    args = parse_args(argv)
    from latentforge import TextToImagePipeline
    from latentforge.imaging import make_grid

    pipe = TextToImagePipeline.from_pretrained(args.model)
    results, scenes, predictions = probe(pipe, args.timesteps, args.num_scenes, args.seed)
    print(f"{'t':>5} {'SNR':>10} {'objects kept':>13} {'swapped followed':>17}")
    for t, (snr, kept, followed) in results.items():
        print(f"{t:>5} {snr:>10.4f} {kept:>13.2f} {followed:>17.2f}")
    shown = min(args.grid_scenes, args.num_scenes)
    rows = [scenes[:shown], *(predictions[t][:shown] for t in args.timesteps)]
    make_grid([image for row in rows for image in row], columns=shown).save(args.output)
    print(f"grid: {args.output} (the scenes, then one row per timestep: {args.timesteps})")
    if args.json:
        table = {
            str(t): {"snr": snr, "objects_kept": kept, "swapped_followed": followed}
            for t, (snr, kept, followed) in results.items()
        }
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
