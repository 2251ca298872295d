"""Emoji fidelity: is the image generated for an emoji's name closest to that emoji among all of them?

For each prompt (a CLDR name, the caption of the built-in `emoji` dataset), the generated image is
compared with every rendered emoji (the gallery) in one feature space: the trained CLIP image tower when
given, else pixels. Top-k accuracy counts prompts whose own emoji ranks among the k most similar.
Similarity is cosine after subtracting the gallery mean, so the shared white background does not dominate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from PIL import Image

from latentforge.data.emoji import compose, emoji_names, render_emoji
from latentforge.evaluation.features import extract_features
from latentforge.evaluation.report import Metric, Report
from latentforge.evaluation.sampling import generate_images

TOP_K = (1, 5)


def emoji_gallery(size: int = 64, skin_tones: bool = False) -> tuple[list[Image.Image], list[str]]:
    """Every emoji the font draws, as the plain `emoji` dataset renders it (glyph at 0.9 of the side,
    centred on white), with its name; in code point order."""
    images, names = [], []
    for char, name in emoji_names(skin_tones).items():
        glyph = render_emoji(char, max(4, round(0.9 * size)))
        if glyph is not None:
            images.append(compose(glyph, size, "white", (0.5, 0.5)))
            names.append(name)
    return images, names


def retrieval_ranks(queries: np.ndarray, gallery: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Rank (0 = most similar) of gallery item `targets[i]` for query i. queries (N, D), gallery (G, D)."""
    centre = gallery.mean(0, keepdims=True)
    q, g = queries - centre, gallery - centre
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    similarity = q @ g.T
    own = similarity[np.arange(len(targets)), np.asarray(targets)]
    # ties count against the target, so a constant feature space scores 0, not 1
    return (similarity >= own[:, None]).sum(1) - 1


def top_k_accuracy(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose target ranks within the first `k`."""
    return float(np.mean(ranks < k))


def evaluate_emoji(
    pipe,
    extractor,
    num_prompts: int = 50,
    seed: int = 0,
    size: int = 64,
    skin_tones: bool = False,
    settings: dict | None = None,
    **generate_kwargs,
) -> Report:
    """Generate one image per sampled emoji name and report top-1/top-5 retrieval among all emoji."""
    gallery, names = emoji_gallery(size, skin_tones)
    if not 1 <= num_prompts <= len(names):
        raise ValueError(f"num_prompts must be in [1, {len(names)}] (the number of emoji), got {num_prompts}")
    targets = sorted(random.Random(f"emoji-eval:{seed}").sample(range(len(names)), num_prompts))
    images = generate_images(pipe, [names[t] for t in targets], seed=seed, **generate_kwargs)
    return emoji_report(images, targets, gallery, names, extractor, settings)


def emoji_report(
    images: Sequence[Image.Image],
    targets: Sequence[int],
    gallery: Sequence[Image.Image],
    names: Sequence[str],
    extractor,
    settings: dict | None = None,
) -> Report:
    """Retrieval report of `images[i]` (made for `names[targets[i]]`) against `gallery`, in `extractor`'s space."""
    ranks = retrieval_ranks(
        extract_features(extractor, list(images)),
        extract_features(extractor, list(gallery), desc="gallery"),
        targets,
    )
    note = f"{len(images)} prompts, gallery of {len(gallery)} emoji, features: {extractor.name}"
    metrics = [Metric(f"top{k}", top_k_accuracy(ranks, k), note) for k in TOP_K]
    metrics.append(Metric("chance_top5", min(1.0, 5 / len(gallery)), "random ranking"))
    rows = [{"prompt": names[t], "rank": int(r)} for t, r in zip(targets, ranks)]
    # grid: each generated image next to the emoji it was asked for
    shown = min(len(images), 32)
    pairs = [im for i in range(shown) for im in (images[i], gallery[targets[i]])]
    marks = [bool(r < 5) for r in ranks[:shown] for _ in range(2)]
    caption = "each generated image followed by its emoji; green = within top 5"
    return Report(
        "emoji",
        "Emoji fidelity (retrieval among all emoji)",
        metrics,
        rows,
        pairs,
        marks,
        settings or {},
        caption,
    )
