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

A control for the decoder (`--latent-noise 0.1 0.3 ...`): the same scenes' clean latents plus sigma * N(0, 1),
decoded, and the objects kept. It says how far off a prediction may be, as unstructured noise, before the
decoder loses the shapes: a model that does worse than that at low t errs in structure, not in amplitude.

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
    parser.add_argument(
        "--latent-noise", type=float, nargs="*", default=[],
        help="decoder control: also decode the clean latents plus sigma * N(0, 1) for each sigma given",
    )  # fmt: skip
    return parser.parse_args(argv)


def swap_shapes(scene, caption: str):
    """(`scene` with every object's shape replaced by the next in SHAPES, `caption` with its words so replaced)."""
    from dataclasses import replace

    from latentforge.data.shapes_grammar import SHAPES

    following = dict(zip(SHAPES, SHAPES[1:] + SHAPES[:1]))
    objects = [replace(o, shape=following[o.shape]) for o in scene.objects]
    words = re.sub(r"\b(" + "|".join(SHAPES) + r")", lambda m: following[m.group(1)], caption)
    return replace(scene, objects=objects), words


def encoded_scenes(pipe, num_scenes: int, seed: int):
    """(held-out scenes at the model's size, their scaled latents)."""
    from latentforge.evaluation.reconstruction import heldout_shapes_images
    from latentforge.imaging import pil_to_tensor

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    scenes = heldout_shapes_images(num_scenes, size=size, seed=seed)
    with torch.no_grad():
        latents = pipe.vae.encode(pil_to_tensor(scenes) * 2 - 1).latent_dist.mean
    return scenes, latents * pipe.vae.config.scaling_factor


def decoder_control(pipe, sigmas: list[float], num_scenes: int, seed: int) -> dict[float, float]:
    """{sigma: share of the held-out scenes whose objects survive decoding their scaled latents plus
    sigma * N(0, 1)} (the probe's scenes for the same `seed`)."""
    from latentforge.evaluation.reconstruction import objects_kept
    from latentforge.imaging import to_pil

    scenes, latents = encoded_scenes(pipe, num_scenes, seed)
    scale = pipe.vae.config.scaling_factor
    generator = torch.Generator().manual_seed(seed)
    shares = {}
    with torch.no_grad():
        for sigma in sigmas:
            noisy = latents + sigma * torch.randn(latents.shape, generator=generator)
            images = to_pil((pipe.vae.decode(noisy / scale).sample.clamp(-1, 1) + 1) / 2)
            shares[sigma] = sum(objects_kept(s, p) for s, p in zip(scenes, images)) / num_scenes
    return shares


def probe(pipe, timesteps: list[int], num_scenes: int, seed: int):
    """({t: (snr, share of scenes whose objects the prediction keeps, share whose prediction from the
    shape-swapped captions shows the swapped scene)}, scenes, {t: predicted images})."""
    from diffusers import DDPMScheduler

    from latentforge.data.shapes import Scene, caption_scene, render_scene
    from latentforge.evaluation.reconstruction import objects_kept
    from latentforge.imaging import to_pil
    from latentforge.models.tokenizer import tokenize
    from latentforge.training.losses import snr

    schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = schedule.config.prediction_type
    for t in timesteps:
        if not 0 <= t < schedule.config.num_train_timesteps:
            raise SystemExit(f"timesteps: {t} is outside [0, {schedule.config.num_train_timesteps})")
    scenes, latents = encoded_scenes(pipe, num_scenes, seed)
    rng = random.Random(seed)
    ground_truth = [Scene.from_json(image.info["scene"]) for image in scenes]
    captions = [caption_scene(scene, rng) for scene in ground_truth]
    swapped = [swap_shapes(scene, caption) for scene, caption in zip(ground_truth, captions)]
    swapped_scenes = [render_scene(scene) for scene, _ in swapped]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
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
    if any(sigma < 0 for sigma in args.latent_noise):
        raise SystemExit(f"latent-noise: every sigma must be >= 0, got {args.latent_noise}")
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
    control = decoder_control(pipe, args.latent_noise, args.num_scenes, args.seed)
    for sigma, kept in control.items():
        print(f"decoder control: clean latents + {sigma:g} * N(0, 1) keep the objects of {kept:.2f}")
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
                    "decoder_control": {str(sigma): kept for sigma, kept in control.items()},
                },
                f,
            )


if __name__ == "__main__":
    main()
