"""A GenEval-style compositional benchmark on the `shapes` world (Ghosh et al. 2023, "GenEval").

Six categories, scored as GenEval scores them, with our detector in place of its object detector:

| category          | prompt                          | correct when                                          |
|-------------------|---------------------------------|-------------------------------------------------------|
| single_object     | a red circle                    | >= 1 circle (colour not checked, as GenEval)          |
| two_objects       | a red circle and a blue star    | >= 1 circle and >= 1 star                             |
| counting          | three red circles               | exactly 3 circles                                     |
| colors            | a red circle                    | >= 1 red circle                                       |
| position          | a red circle above a blue star  | the largest circle is above the largest star          |
| color_attribution | a red circle and a blue star    | >= 1 red circle and >= 1 blue star                    |

Position follows the shapes captions rather than GenEval's `relative_position`: "A above B" means the
boxes are separated vertically, whatever their horizontal offset (GenEval also asks that the named
axis dominate, which fails 4% of correct ground-truth scenes of this world).
Overall accuracy is the mean of the category accuracies (as GenEval). Beside it, outside the overall,
"color_only" reads colours without shapes over every image of a split: the background the prompt names
(if any) is the detected one and each named object colour is on some object, whatever its shape. It
shows whether colours follow the prompt while shapes are still too rough to classify. "clean_shapes", also
outside the overall, asks whether the model draws clean, separate shapes of any kind: the detector finds as
many objects as the prompt names, each close to an ideal circle, square, triangle or star (its `fit`, see
the detector). A model must draw clean shapes before it can draw the named ones; this tracks the first.
"object_fit", the mean fit of every object detected in a split's images (0 if none), moves before it does.
"exact_count" asks only that the detector find as many objects as the prompt names, whatever they look like:
GenEval's rules (">= 1 circle") let spurious extra objects pass, and each extra blob is one more chance to
draw a named shape, so a model that scatters blobs scores higher on them than one that draws one object.
Prompts whose colour-shape pairs were held out of training (`HELD_OUT_PAIRS`) form a second, separately
scored set of the same six categories: it measures composition of a colour and a shape never seen together.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from latentforge.data.shapes import COLORS, HELD_OUT_PAIRS, NUMBER_WORDS, RELATIONS, SHAPES, parse_prompt
from latentforge.data.shapes import relation_holds as boxes_related
from latentforge.data.shapes_grammar import PromptSpec
from latentforge.evaluation.detector import CLEAN_MIN_FIT, DetectedObject, Detection, detect_objects
from latentforge.evaluation.report import Metric, Report
from latentforge.evaluation.sampling import generate_images

CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attribution")
# Without a background phrase the training captions mean white (shapes_grammar: only white goes
# unnamed), so a prompt with a white object names a plain background that differs from its objects.
_PLAIN_FOR_WHITE = ("black", "gray")
# readings of every image of a split, beside the categories
OUTSIDE_OVERALL = ("color_only", "clean_shapes", "exact_count", "object_fit")


@dataclass(frozen=True)
class CompositionalPrompt:
    """One benchmark prompt: its text, category, and whether it uses a held-out colour-shape pair."""

    text: str
    category: str
    held_out: bool = False

    @property
    def spec(self) -> PromptSpec:
        """The structured prompt (object groups, relation, background) as the shapes grammar reads it."""
        return parse_prompt(self.text)


def _single(color: str, shape: str) -> str:
    return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}"


def _with_background(body: str, colors: Sequence[str]) -> str:
    if "white" not in colors:
        return body
    background = next(b for b in _PLAIN_FOR_WHITE if b not in colors)
    return f"{body} on a {background} background"


def _prompt_text(category: str, pairs: list[tuple[str, str]], rng: random.Random) -> str:
    """Text of a prompt of `category` over 1 or 2 (colour, shape) pairs, in the shapes caption grammar."""
    (c1, s1), *rest = pairs
    if category in ("single_object", "colors"):
        body = _single(c1, s1)
    elif category == "counting":
        body = f"{NUMBER_WORDS[rng.choice(sorted(NUMBER_WORDS))]} {c1} {s1}s"
    elif category == "position":
        body = f"{_single(c1, s1)} {rng.choice(RELATIONS)} {_single(*rest[0])}"
    else:  # two_objects, color_attribution
        body = f"{_single(c1, s1)} and {_single(*rest[0])}"
    return _with_background(body, [c for c, _ in pairs])


def _draw_pairs(
    category: str, rng: random.Random, allowed: list[tuple[str, str]], held: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """1 or 2 (colour, shape) pairs; the first from `held` when it is given (a held-out prompt)."""
    first = rng.choice(held or allowed)
    if category in ("single_object", "colors", "counting"):
        return [first]
    # two different shapes (as GenEval's two different classes); attribution also needs two colours
    others = [
        p for p in allowed if p[1] != first[1] and (category != "color_attribution" or p[0] != first[0])
    ]
    pairs = [first, rng.choice(others)]
    return pairs if not held or rng.random() < 0.5 else pairs[::-1]


def make_prompt_set(
    num_per_category: int = 50,
    seed: int = 0,
    held_out_per_category: int | None = None,
    held_out_pairs: frozenset[tuple[str, str]] | None = None,
) -> list[CompositionalPrompt]:
    """The fixed prompt set of a seed: `num_per_category` in-distribution prompts per category, then
    `held_out_per_category` (default: the same number) prompts that use a held-out pair."""
    if num_per_category < 1:
        raise ValueError(f"num_per_category must be >= 1, got {num_per_category}")
    held_count = num_per_category if held_out_per_category is None else held_out_per_category
    if held_count < 0:
        raise ValueError(f"held_out_per_category must be >= 0, got {held_out_per_category}")
    held_pairs = sorted(HELD_OUT_PAIRS if held_out_pairs is None else held_out_pairs)
    allowed = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in set(held_pairs)]
    rng = random.Random(f"compositional:{seed}")
    prompts = []
    for held_out, count in ((False, num_per_category), (True, held_count if held_pairs else 0)):
        for category in CATEGORIES:
            for _ in range(count):
                pairs = _draw_pairs(category, rng, allowed, held_pairs if held_out else [])
                text = _prompt_text(category, pairs, rng)
                prompts.append(CompositionalPrompt(text, category, held_out))
    return prompts


def relation_holds(a: DetectedObject, b: DetectedObject, relation: str, tolerance: float = 1.0) -> bool:
    """True when `a` is `relation` `b`, as the shapes captions define it: boxes separated along that axis,
    up to `tolerance` px of overlap for detection jitter."""
    shrink = np.array([tolerance, tolerance, -tolerance, -tolerance]) / 2
    return boxes_related(tuple(np.add(a.box, shrink)), tuple(np.add(b.box, shrink)), relation)


def colors_follow_prompt(prompt: CompositionalPrompt, detection: Detection) -> bool:
    """The colour-only reading of an image: the background the prompt names (if it names one) is the detected
    one and every object colour the prompt names is found on a detected object of any shape."""
    spec = prompt.spec
    return spec.background in (None, detection.background) and all(
        detection.find(color=group.color) for group in spec.objects
    )


def count_is_exact(prompt: CompositionalPrompt, detection: Detection) -> bool:
    """The count-only reading of an image: the detector finds as many objects as the prompt names, of any
    shape, colour and fit."""
    return len(detection.objects) == sum(group.count for group in prompt.spec.objects)


def shapes_are_clean(prompt: CompositionalPrompt, detection: Detection) -> bool:
    """The shape-only reading of an image: as many objects as the prompt names, each a cleanly drawn shape of
    any kind (fit >= CLEAN_MIN_FIT), whatever their colours and classes."""
    return count_is_exact(prompt, detection) and all(o.fit >= CLEAN_MIN_FIT for o in detection.objects)


def score_detection(prompt: CompositionalPrompt, detection: Detection) -> tuple[bool, str]:
    """(correct, reason) of one image's detection for `prompt`, by the rules of its category."""
    spec = prompt.spec
    groups = spec.objects
    if prompt.category == "counting":
        found = detection.count(groups[0].shape)
        return found == groups[0].count, f"{groups[0].shape}: expected {groups[0].count}, found {found}"
    by_color = prompt.category in ("colors", "color_attribution")
    reasons = []
    for group in groups:
        color = group.color if by_color else None
        if not detection.find(group.shape, color):
            reasons.append(f"no {color + ' ' if color else ''}{group.shape}")
    if reasons or prompt.category != "position":
        return not reasons, "; ".join(reasons) or "ok"
    a, b = (detection.find(g.shape)[0] for g in groups)  # the largest of each, as GenEval's most confident
    if relation_holds(a, b, spec.relation):
        return True, "ok"
    return False, f"{groups[0].shape} at {a.box} is not {spec.relation} {groups[1].shape} at {b.box}"


@dataclass
class CompositionalResult:
    """Per-image scores of a prompt set; images are listed prompt by prompt."""

    prompts: list[CompositionalPrompt]
    correct: list[bool]
    reasons: list[str] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    color_correct: list[bool] = field(default_factory=list)  # colors_follow_prompt per image
    clean: list[bool] = field(default_factory=list)  # shapes_are_clean per image
    exact: list[bool] = field(default_factory=list)  # count_is_exact per image

    def accuracy(self, held_out: bool = False) -> dict[str, float]:
        """Accuracy per category (in [0, 1]), "overall" (the mean over categories, as GenEval), and outside
        the overall over the split's images: "color_only" (colors_follow_prompt), "clean_shapes"
        (shapes_are_clean), "exact_count" (count_is_exact) and "object_fit" (the mean fit of the objects
        detected, 0 if none)."""
        scores: dict[str, float] = {}
        for category in CATEGORIES:
            hits = [
                c
                for p, c in zip(self.prompts, self.correct)
                if (p.category, p.held_out) == (category, held_out)
            ]
            if hits:
                scores[category] = float(np.mean(hits))
        scores["overall"] = float(np.mean(list(scores.values()))) if scores else float("nan")
        per_image_readings = (
            ("color_only", self.color_correct),
            ("clean_shapes", self.clean),
            ("exact_count", self.exact),
        )
        for name, per_image in per_image_readings:
            hits = [c for p, c in zip(self.prompts, per_image) if p.held_out == held_out]
            if hits:
                scores[name] = float(np.mean(hits))
        detections = [d for p, d in zip(self.prompts, self.detections) if p.held_out == held_out]
        if detections:
            fits = [o.fit for d in detections for o in d.objects]
            scores["object_fit"] = float(np.mean(fits)) if fits else 0.0
        return scores

    def summary(self) -> dict:
        """{"in_distribution": accuracies, "held_out": accuracies (if any), "num_images": n}."""
        result = {"in_distribution": self.accuracy(False), "num_images": len(self.correct)}
        if any(p.held_out for p in self.prompts):
            result["held_out"] = self.accuracy(True)
        return result


def score_images(
    prompts: Sequence[CompositionalPrompt], images: Sequence[Image.Image]
) -> CompositionalResult:
    """Detect objects in each image and score it against its prompt (one prompt per image)."""
    from tqdm.auto import tqdm

    if len(prompts) != len(images):
        raise ValueError(f"need one prompt per image, got {len(prompts)} prompts and {len(images)} images")
    result = CompositionalResult(list(prompts), [])
    for prompt, image in zip(tqdm(prompts, desc="scoring", disable=len(prompts) < 200), images):
        detection = detect_objects(image)
        correct, reason = score_detection(prompt, detection)
        result.correct.append(correct)
        result.reasons.append(reason)
        result.detections.append(detection)
        result.color_correct.append(colors_follow_prompt(prompt, detection))
        result.clean.append(shapes_are_clean(prompt, detection))
        result.exact.append(count_is_exact(prompt, detection))
    return result


def evaluate_compositional(
    pipe, prompts: Sequence[CompositionalPrompt], images_per_prompt: int = 1, seed: int = 0, **generate_kwargs
) -> tuple[CompositionalResult, list[Image.Image]]:
    """Generate `images_per_prompt` images per prompt with `pipe` (seeds `seed`, `seed + 1`, ...) and score them."""
    if images_per_prompt < 1:
        raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    repeated = [p for p in prompts for _ in range(images_per_prompt)]
    images = generate_images(pipe, [p.text for p in repeated], seed=seed, **generate_kwargs)
    return score_images(repeated, images), images


def compositional_report(
    result: CompositionalResult, images: Sequence[Image.Image], settings: dict
) -> Report:
    """The benchmark's report: accuracy per category and overall, in-distribution and held-out pairs."""
    metrics = []
    for split, scores in result.summary().items():
        if not isinstance(scores, dict):
            continue
        in_split = [p for p in result.prompts if p.held_out == (split == "held_out")]
        for category, value in scores.items():
            count = sum(category in ("overall", *OUTSIDE_OVERALL, p.category) for p in in_split)
            metrics.append(Metric(f"{split}/{category}", value, f"{count} images, shapes detector"))
    rows = [
        {
            "prompt": p.text,
            "category": p.category,
            "held_out": p.held_out,
            "correct": c,
            "reason": r,
            "colors_ok": k,
            "shapes_clean": clean,
            "count_exact": exact,
        }
        for p, c, r, k, clean, exact in zip(
            result.prompts, result.correct, result.reasons, result.color_correct, result.clean, result.exact
        )
    ]
    return Report(
        name="compositional",
        title="Compositional benchmark (GenEval-style, shapes world)",
        metrics=metrics,
        rows=rows,
        images=list(images),
        marks=list(result.correct),
        settings=settings,
    )
