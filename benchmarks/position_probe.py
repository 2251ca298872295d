"""Where position is lost: the text encoder, the U-Net's first prediction, or the samples. One line each per model.

1. text: the cosine of the text encoder's hidden states at the relation word of "a red circle to the left of a
   blue square" against "... to the right of ..." (and above / below); 1.000 means the U-Net is shown no
   difference at all.
2. x0 at the noisiest step: the clean image the U-Net predicts from pure noise (t = T - 1, the step where the
   layout is decided; 16 noise draws averaged) for 4 colour pairs under each relation; the first object's
   colour centroid minus the second's, in px (a soft colour reading). The same reading of 16 training scenes
   per prompt gives what the data teach (about -12 px in x for "to the left of", +12 in y for "below").
3. samples: the benchmark's position rule (`score_detection`) on the position prompts of `make_prompt_set`
   seeds 10-17 (80 in distribution, 80 held out; image seeds from 100), at the default model's sampling
   settings (20 steps, guidance 3, rescale 0.7, as flags), and the share of images where both named shapes
   were found.

    python benchmarks/position_probe.py latentforge/assets/default-model runs/ft/NAME/model
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from diffusers import DDPMScheduler

from latentforge.data.shapes import COLORS, render_scene, scene_for_prompt
from latentforge.evaluation.compositional import make_prompt_set, score_images
from latentforge.evaluation.sampling import generate_images, load_pipeline

RELATIONS = ("to the left of", "to the right of", "above", "below")
PAIRS = (("red", "circle", "blue", "square"), ("green", "star", "pink", "triangle"),
         ("yellow", "square", "purple", "circle"), ("cyan", "triangle", "orange", "star"))  # fmt: skip
DRAWS = 16


def _prompt(pair: tuple[str, str, str, str], relation: str) -> str:
    c1, s1, c2, s2 = pair
    return f"a {c1} {s1} {relation} a {c2} {s2} on a white background"


def colour_offset(image: np.ndarray, first: str, second: str) -> np.ndarray:
    """(dx, dy) px: the centroid of `first`'s colour minus `second`'s in `image` (H, W, 3) in [0, 255], each pixel
    weighted exp(-RGB distance / 40), so that a faint, blurred mean image still reads."""
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]

    def centroid(color: str) -> np.ndarray:
        weight = np.exp(-np.linalg.norm(image - np.array(COLORS[color]), axis=-1) / 40.0)
        return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()

    return centroid(first) - centroid(second)


def text_cosines(pipe) -> dict[str, float]:
    """Cosine of the hidden states at the relation word, left vs right and above vs below."""
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    found = {}
    for a, b, at in (("to the left of", "to the right of", 6), ("above", "below", 4)):
        texts = [f"a red circle {r} a blue square" for r in (a, b)]
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = encoder(ids.input_ids.to(encoder.device))[0]
        found["left/right" if at == 6 else "above/below"] = float(
            torch.cosine_similarity(hidden[0, at], hidden[1, at], dim=0)
        )
    return found


def first_prediction_offsets(pipe) -> dict[str, np.ndarray]:
    """Mean colour offset (dx, dy) of the U-Net's x0 from pure noise, per relation, over PAIRS."""
    unet, vae, tokenizer, encoder = pipe.unet, pipe.vae, pipe.tokenizer, pipe.text_encoder
    schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    t = schedule.config.num_train_timesteps - 1
    alpha = schedule.alphas_cumprod[t]
    prediction = schedule.config.prediction_type
    generator = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    offsets: dict[str, list[np.ndarray]] = {r: [] for r in RELATIONS}
    for pair in PAIRS:
        for relation in RELATIONS:
            ids = tokenizer([_prompt(pair, relation)], padding="max_length",
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids  # fmt: skip
            noise = torch.randn(DRAWS, unet.config.in_channels, size, size, generator=generator)
            with torch.no_grad():
                embeds = encoder(ids)[0].repeat(DRAWS, 1, 1)
                out = unet(noise, torch.full((DRAWS,), t), embeds).sample
                if prediction == "v_prediction":
                    x0 = alpha.sqrt() * noise - (1 - alpha).sqrt() * out
                else:
                    x0 = (noise - (1 - alpha).sqrt() * out) / alpha.sqrt().clamp_min(1e-4)
                images = vae.decode(x0 / vae.config.scaling_factor).sample.clamp(-1, 1)
            mean = ((images.mean(0) + 1) * 127.5).permute(1, 2, 0).numpy()
            offsets[relation].append(colour_offset(mean, pair[0], pair[2]))
    return {r: np.mean(v, 0) for r, v in offsets.items()}


def data_offsets() -> dict[str, np.ndarray]:
    """The same reading on the mean of DRAWS training-like scenes per prompt (`scene_for_prompt`)."""
    found = {}
    for relation in RELATIONS:
        per_pair = []
        for k, pair in enumerate(PAIRS):
            scenes = [scene_for_prompt(_prompt(pair, relation), rng=1000 * k + i) for i in range(DRAWS)]
            mean = np.mean([np.asarray(render_scene(s), float) for s in scenes], 0)
            per_pair.append(colour_offset(mean, pair[0], pair[2]))
        found[relation] = np.mean(per_pair, 0)
    return found


def sample_scores(pipe, settings: dict) -> list[str]:
    """Position accuracy and both-found share on the probe's prompts, in distribution and held out."""
    lines = []
    for held_out in (False, True):
        prompts = [p for seed in range(10, 18) for p in make_prompt_set(10, seed)
                   if p.category == "position" and p.held_out == held_out]  # fmt: skip
        images = generate_images(pipe, [p.text for p in prompts], seed=100, **settings)
        result = score_images(prompts, images)
        both = np.mean([r == "ok" or " is not " in r for r in result.reasons])
        split = "held out" if held_out else "in distribution"
        lines.append(f"{split} {np.mean(result.correct):.3f} (both found {both:.2f}, {len(prompts)} images)")
    return lines


def _offsets_text(offsets: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{r}: ({v[0]:+.2f}, {v[1]:+.2f})" for r, v in offsets.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="diffusers model folders")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--guidance-rescale", type=float, default=0.7)
    parser.add_argument(
        "--skip-samples", action="store_true", help="only the text and first-prediction readings"
    )
    args = parser.parse_args(argv)
    settings = {"num_inference_steps": args.steps, "guidance_scale": args.guidance,
                "guidance_rescale": args.guidance_rescale}  # fmt: skip
    print("training scenes, x0 reading (dx, dy) px:", _offsets_text(data_offsets()))
    for model in args.models:
        pipe = load_pipeline(model, "cpu")
        cosines = ", ".join(f"{k} {v:.3f}" for k, v in text_cosines(pipe).items())
        print(f"{model}: text cosine at the relation word {cosines}")
        print(
            f"{model}: x0 at the noisiest step (dx, dy) px: {_offsets_text(first_prediction_offsets(pipe))}"
        )
        if not args.skip_samples:
            print(f"{model}: position " + "; ".join(sample_scores(pipe, settings)))


if __name__ == "__main__":
    main()
