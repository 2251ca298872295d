"""Distribution-level metrics against held-out `shapes` scenes: FID/KID in a stated feature space, and
CLIP score. The generated set is made from the captions of the reference set (as COCO-FID is)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from PIL import Image

from latentforge.data.shapes import caption_scene, render_scene, sample_scene
from latentforge.evaluation.features import extract_features
from latentforge.evaluation.metrics import clip_score, frechet_distance, kernel_inception_distance
from latentforge.evaluation.report import Metric, Report
from latentforge.evaluation.sampling import generate_images


def shapes_reference_set(
    num_images: int, size: int = 64, seed: int = 0
) -> tuple[list[Image.Image], list[str]]:
    """Held-out shapes images and their captions, seeded apart from the training samples."""
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2, got {num_images}")
    images, captions = [], []
    for i in range(num_images):
        rng = random.Random(f"eval-reference:{seed}:{i}")
        scene = sample_scene(rng, size=size)
        images.append(render_scene(scene))
        captions.append(caption_scene(scene, rng))
    return images, captions


def distribution_report(
    generated: Sequence[Image.Image],
    reference: Sequence[Image.Image],
    second_reference: Sequence[Image.Image],
    extractor,
    settings: dict | None = None,
) -> Report:
    """FID and KID of `generated` vs `reference`; the same between two reference sets is the floor that
    a perfect model would reach at this sample size (both metrics are biased for small sets)."""
    fake = extract_features(extractor, list(generated), desc="features (generated)")
    real = extract_features(extractor, list(reference), desc="features (reference)")
    floor = extract_features(extractor, list(second_reference), desc="features (second reference)")
    note = f"{len(generated)} vs {len(reference)} images, features: {extractor.name}"
    kid, kid_std = kernel_inception_distance(fake, real)
    kid_floor, _ = kernel_inception_distance(floor, real)
    metrics = [
        Metric("fid", frechet_distance(fake, real), note),
        Metric("kid", kid, note),
        Metric("kid_std", kid_std, "over 100 random subsets"),
        Metric("fid_reference_floor", frechet_distance(floor, real), note + "; two held-out reference sets"),
        Metric("kid_reference_floor", kid_floor, note + "; two held-out reference sets"),
    ]
    images = [im for pair in zip(generated[:32], reference[:32]) for im in pair]
    caption = "each generated image followed by the reference image whose caption it was made from"
    return Report(
        "fid", "FID / KID against held-out shapes images", metrics, [], images, [], settings or {}, caption
    )


def evaluate_fid(
    pipe, extractor, num_images: int = 256, seed: int = 0, size: int = 64, **generate_kwargs
) -> Report:
    """Generate from the captions of `num_images` held-out scenes and compare the two sets (FID, KID)."""
    settings = generate_kwargs.pop("settings", None)
    reference, captions = shapes_reference_set(num_images, size, seed)
    second, _ = shapes_reference_set(num_images, size, seed + 1_000_003)
    generated = generate_images(pipe, captions, seed=seed, **generate_kwargs)
    return distribution_report(generated, reference, second, extractor, settings)


def clip_score_report(
    generated: Sequence[Image.Image],
    reference: Sequence[Image.Image],
    captions: Sequence[str],
    clip,
    settings: dict | None = None,
) -> Report:
    """Mean CLIP score of generated images with their captions, and of the ground-truth renders (ceiling)."""
    texts = clip.encode_texts(list(captions))
    scores = clip_score(clip.encode_images(list(generated)), texts)
    ceiling = clip_score(clip.encode_images(list(reference)), texts)
    note = f"{len(captions)} held-out captions, {clip.name}"
    metrics = [
        Metric("clip_score", scores.mean().item(), note),
        Metric("clip_score_std", scores.std().item() if len(scores) > 1 else 0.0, note),
        Metric("clip_score_ground_truth", ceiling.mean().item(), note + "; ground-truth renders"),
    ]
    rows = [
        {"prompt": c, "clip_score": s, "ground_truth": g}
        for c, s, g in zip(captions, scores.tolist(), ceiling.tolist())
    ]
    return Report("clip-score", "CLIP score", metrics, rows, list(generated), [], settings or {})


def evaluate_clip_score(
    pipe, clip, num_prompts: int = 256, seed: int = 0, size: int = 64, **generate_kwargs
) -> Report:
    """CLIP score of images generated from the captions of `num_prompts` held-out scenes."""
    settings = generate_kwargs.pop("settings", None)
    reference, captions = shapes_reference_set(num_prompts, size, seed)
    generated = generate_images(pipe, captions, seed=seed, **generate_kwargs)
    return clip_score_report(generated, reference, captions, clip, settings)
