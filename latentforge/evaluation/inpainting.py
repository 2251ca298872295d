"""The inpainting check of the shapes world: repaint the empty left half of a scene with an object the prompt
asks for, and keep the right half.

Each case is a held-out scene whose objects all lie in the right half, the mask is the left half (white =
repaint), and the prompt names one object and the scene's background in the training captions' grammar
("a blue circle on a green background"). A case passes when the detector finds the asked object (shape and
colour) with its centre inside the mask, and reads the same background and the same objects on the kept half
as in the source.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from latentforge.data.builtin_rows import indefinite_article
from latentforge.data.shapes import COLORS, SHAPES, Scene, ShapeObject, render_scene
from latentforge.data.shapes_grammar import BACKGROUNDS
from latentforge.evaluation.detector import Detection, detect_objects
from latentforge.evaluation.report import Metric, Report

SIZE = 64
MASK_RIGHT = SIZE // 2  # the mask covers x < MASK_RIGHT
KEPT_LEFT = SIZE // 2 + 4  # source objects lie at x >= KEPT_LEFT


@dataclass(frozen=True)
class InpaintCase:
    """A source scene (objects in the right half only) and the object to paint into the left half."""

    scene: Scene
    color: str
    shape: str

    @property
    def prompt(self) -> str:
        body = f"{indefinite_article(self.color)} {self.color} {self.shape}"
        if self.scene.background == "white":  # the captions leave a white background unnamed
            return body
        return f"{body} on {indefinite_article(self.scene.background)} {self.scene.background} background"


def make_inpaint_cases(num_cases: int, seed: int = 0) -> list[InpaintCase]:
    """`num_cases` cases of a seed: 1-2 objects stacked in the right half, an asked object of another colour
    than the background."""
    if num_cases < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}")
    rng = random.Random(f"inpaint:{seed}")
    cases = []
    for _ in range(num_cases):
        background = rng.choice(BACKGROUNDS)
        colors = [c for c in COLORS if c != background]
        count = rng.choice((1, 2))
        objects = []
        for slot in range(count):
            side = rng.randint(14, 22)
            top_range = (0, SIZE - side) if count == 1 else (slot * SIZE // 2, (slot + 1) * SIZE // 2 - side)
            x0, y0 = rng.randint(KEPT_LEFT, SIZE - side), rng.randint(*top_range)
            objects.append(
                ShapeObject(rng.choice(SHAPES), rng.choice(colors), (x0, y0, x0 + side, y0 + side))
            )
        scene = Scene(objects=objects, background=background, size=SIZE)
        cases.append(InpaintCase(scene, rng.choice(colors), rng.choice(SHAPES)))
    return cases


def left_half_mask() -> Image.Image:
    """The mask of every case: white (repaint) on the left half, black (keep) on the right."""
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, MASK_RIGHT, SIZE))
    return mask


def _kept_half(detection: Detection) -> tuple[str, list[tuple[str, str]]]:
    kept = [(o.shape, o.color) for o in detection.objects if o.center[0] >= MASK_RIGHT + 2]
    return detection.background, sorted(kept)


def score_case(case: InpaintCase, source: Image.Image, result: Image.Image) -> tuple[bool, bool]:
    """(the asked object is inside the mask, the kept half reads as in the source)."""
    found = detect_objects(result)
    inside = any(o.center[0] < MASK_RIGHT for o in found.find(case.shape, case.color))
    return inside, _kept_half(found) == _kept_half(detect_objects(source))


def evaluate_inpainting(
    pipe: Any, cases: Sequence[InpaintCase], seed: int, batch_size: int, settings: dict, **call: Any
) -> Report:
    """Inpaint every case with `pipe` (an InpaintPipeline; `call` = its sampling keywords) and score it."""
    sources = [render_scene(case.scene) for case in cases]
    mask = left_half_mask()
    results: list[Image.Image] = []
    starts = range(0, len(cases), batch_size)
    for start in tqdm(starts, desc="inpainting", disable=len(starts) < 2):
        batch = list(range(start, min(start + batch_size, len(cases))))
        results += pipe(
            [cases[i].prompt for i in batch],
            [sources[i] for i in batch],
            [mask] * len(batch),
            generator=[torch.Generator("cpu").manual_seed(seed + i) for i in batch],
            **call,
        ).images
    scores = [score_case(c, s, r) for c, s, r in zip(cases, sources, results)]
    passed = [inside and kept for inside, kept in scores]
    note = f"{len(cases)} held-out scenes, left half repainted, shapes detector"
    metrics = [
        Metric("inpainting", sum(passed) / len(cases), note + ": asked object inside the mask, rest kept"),
        Metric("object_in_mask", sum(i for i, _ in scores) / len(cases), note),
        Metric("outside_unchanged", sum(k for _, k in scores) / len(cases), note),
    ]
    rows = [
        {"prompt": c.prompt, "object_in_mask": i, "outside_unchanged": k} for c, (i, k) in zip(cases, scores)
    ]
    images = [im for pair in zip(sources, results) for im in pair]
    marks = [mark for ok in passed for mark in (None, ok)]
    caption = "each source scene followed by its inpainted version (framed green when the case passes)"
    return Report(
        "inpainting", "Inpainting check (shapes world)", metrics, rows, images, marks, settings, caption
    )
