"""Built-in synthetic `shapes` dataset: coloured shapes on plain or coloured backgrounds.

Every sample is a `Scene` (ground truth: shape, colour and pixel box per object) rendered to an RGB
image and captioned with a small grammar that `parse_prompt` (in `shapes_grammar`) reads back, so the
evaluation can check colour, shape, count and relative position of generated images.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from latentforge.data.builtin_rows import png_image_value
from latentforge.data.shapes_grammar import (
    BACKGROUNDS,
    COLORS,
    NUMBER_WORDS,
    PLAIN_BACKGROUNDS,
    RELATIONS,
    SHAPES,
    ObjectSpec,
    PromptSpec,
    caption_scene,
    inverse_relation,
    parse_prompt,
    relation_holds,
)

if TYPE_CHECKING:
    import datasets

# Colour/shape pairs never drawn in training data, to measure compositional generalisation:
# every colour and every shape still appears in training, only these combinations do not.
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("blue", "triangle"), ("yellow", "star"), ("red", "square"), ("green", "circle")}
)
KINDS = ("single", "pair", "count", "mixed")
_SUPERSAMPLE = 4
_MIN_SIDE, _MAX_SIDE = 14 / 64, 32 / 64  # object side as a fraction of the image side
_GAP = 2 / 64  # free space kept between boxes, as a fraction of the image side


@dataclass
class ShapeObject:
    """One shape; box = (x0, y0, x1, y1) in pixels, x1/y1 exclusive, the tight bounding box of the shape."""

    shape: str
    color: str
    box: tuple[int, int, int, int]


@dataclass
class Scene:
    """Ground truth of one image: objects drawn in order on a plain background, image `size` x `size` px."""

    objects: list[ShapeObject] = field(default_factory=list)
    background: str = "white"
    size: int = 64

    def to_json(self) -> str:
        """Serialise to a JSON string (the `scene` column of the dataset)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Scene:
        """Inverse of `to_json`."""
        data = json.loads(text)
        objects = [ShapeObject(o["shape"], o["color"], tuple(o["box"])) for o in data["objects"]]
        return cls(objects=objects, background=data["background"], size=int(data["size"]))


def _as_random(rng: random.Random | np.random.Generator | int) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(2**63)))
    if isinstance(rng, int):
        return random.Random(rng)
    raise ValueError(f"rng must be a random.Random, numpy Generator or int seed, got {type(rng).__name__}")


def _star_points(n: int = 5, inner: float = 0.382) -> list[tuple[float, float]]:
    """Regular star vertices, point up, rescaled to fill the unit square [0, 1]^2."""
    pts = []
    for i in range(2 * n):
        r = 1.0 if i % 2 == 0 else inner
        a = math.pi * i / n - math.pi / 2
        pts.append((r * math.cos(a), r * math.sin(a)))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]


_UNIT_POLYGONS = {"triangle": [(0.0, 1.0), (1.0, 1.0), (0.5, 0.0)], "star": _star_points()}


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, ...], fill) -> None:
    """Draw one `shape` filling `box` = (x0, y0, x1, y1), x1/y1 exclusive, as the scenes draw it."""
    x0, y0, x1, y1 = box
    # PIL's ellipse/rectangle include the end pixel; -1 keeps x1/y1 exclusive
    if shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        w, h = x1 - x0, y1 - y0
        draw.polygon([(x0 + u * w, y0 + v * h) for u, v in _UNIT_POLYGONS[shape]], fill=fill)


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """Boolean (height, width) mask of `shape` filling the whole array: the pixels it covers at least half of."""
    s = _SUPERSAMPLE
    big = Image.new("L", (width * s, height * s), 0)
    draw_shape(ImageDraw.Draw(big), shape, (0, 0, width * s, height * s), 255)
    return np.asarray(big.resize((width, height), Image.Resampling.BOX)) >= 128


def render_scene(scene: Scene) -> Image.Image:
    """Draw `scene` as an RGB image of `scene.size` px, antialiased by 4x supersampling + LANCZOS."""
    s = _SUPERSAMPLE
    big = Image.new("RGB", (scene.size * s, scene.size * s), COLORS[scene.background])
    draw = ImageDraw.Draw(big)
    for obj in scene.objects:
        draw_shape(draw, obj.shape, tuple(v * s for v in obj.box), COLORS[obj.color])
    return big.resize((scene.size, scene.size), Image.Resampling.LANCZOS)


def _default_sides(size: int) -> tuple[int, int]:
    return max(4, round(_MIN_SIDE * size)), round(_MAX_SIDE * size)


def _place_boxes(
    rng: random.Random, count: int, size: int, sides: tuple[int, int] | None = None, tries: int = 200
) -> list[tuple[int, int, int, int]]:
    """Random square boxes inside the image, pairwise disjoint with a gap (rejection sampling); `sides` =
    (smallest, largest) side in px, None = 14-32 px at 64 px."""
    gap = max(1, round(_GAP * size))
    lo, hi = sides or _default_sides(size)
    # many objects need smaller sides to fit; shrink the upper bound on repeated failure
    hi = min(hi, max(lo, int(size / math.ceil(math.sqrt(count))) - 2 * gap))
    boxes: list[tuple[int, int, int, int]] = []
    restarts_at_smallest = 0
    while len(boxes) < count:
        for _ in range(tries):
            side = rng.randint(lo, hi)
            x0, y0 = rng.randint(0, size - side), rng.randint(0, size - side)
            box = (x0, y0, x0 + side, y0 + side)
            if all(_disjoint(box, b, gap) for b in boxes):
                boxes.append(box)
                break
        else:  # no room: start again with smaller objects
            restarts_at_smallest += hi == lo
            if restarts_at_smallest > 100:
                raise ValueError(
                    f"{count} objects of at least {lo} px do not fit in a {size} px image: lower min_side"
                )
            boxes, hi = [], max(lo, hi - gap)
    return boxes


def _disjoint(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _pick_pairs(rng: random.Random, n: int, exclude: frozenset[tuple[str, str]]) -> list[tuple[str, str]]:
    """`n` distinct (colour, shape) pairs not in `exclude`."""
    allowed = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in exclude]
    return rng.sample(allowed, n)


def _group_counts(rng: random.Random, kind: str) -> list[int]:
    if kind == "single":
        return [1]
    if kind == "pair":
        return [1, 1]
    if kind == "count":
        return [rng.randint(2, 4)]
    return rng.choice([[2, 1], [1, 2], [3, 1], [1, 3], [2, 2]])  # mixed: 3-4 objects, 2 groups


def _pick_background(rng: random.Random, object_colors: set[str]) -> str:
    # half the scenes on a plain background; a background never equals an object colour
    pool = PLAIN_BACKGROUNDS if rng.random() < 0.5 else BACKGROUNDS
    choices = [b for b in pool if b not in object_colors] or [
        b for b in BACKGROUNDS if b not in object_colors
    ]
    return rng.choice(choices)


def _build_scene(
    rng: random.Random,
    size: int,
    groups: list[tuple[int, str, str]],
    background: str | None,
    sides: tuple[int, int] | None = None,
) -> Scene:
    n = sum(count for count, _, _ in groups)
    boxes = _place_boxes(rng, n, size, sides)
    objects = [ShapeObject(shape, color, boxes.pop()) for count, color, shape in groups for _ in range(count)]
    if background is None:
        background = _pick_background(rng, {o.color for o in objects})
    return Scene(objects=objects, background=background, size=size)


def sample_scene(
    rng: random.Random | np.random.Generator | int,
    size: int = 64,
    kind: str | None = None,
    exclude_pairs: frozenset[tuple[str, str]] = HELD_OUT_PAIRS,
    sides: tuple[int, int] | None = None,
) -> Scene:
    """Random scene of `kind` (single, pair, count, mixed; None = any), 1-4 non-overlapping objects.

    `sides` = (smallest, largest) object side in px (None: 14-32 px at 64 px, the same fractions at other
    sizes); scenes of several objects shrink the largest so that they fit."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (or none, for every kind), got {kind!r}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    if sides is not None and not 4 <= sides[0] <= sides[1] <= size:
        raise ValueError(
            f"object sides must satisfy 4 <= min_side <= max_side <= size ({size} px), got {sides[0]} and "
            f"{sides[1]}: give min_side and max_side in px of the image"
        )
    r = _as_random(rng)
    kind = kind or r.choice(KINDS)
    counts = _group_counts(r, kind)
    pairs = _pick_pairs(r, len(counts), frozenset(exclude_pairs))
    return _build_scene(r, size, [(n, c, s) for n, (c, s) in zip(counts, pairs)], None, sides)


def scene_for_prompt(
    prompt: str | PromptSpec, rng: random.Random | np.random.Generator | int = 0, size: int = 64
) -> Scene:
    """A random scene that satisfies `prompt` (grammar of `parse_prompt`): reference images for evaluation."""
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    r = _as_random(rng)
    groups = [(o.count, o.color, o.shape) for o in spec.objects]
    for _ in range(1000):
        scene = _build_scene(r, size, groups, spec.background)
        a, b = scene.objects[0], scene.objects[-1]
        if spec.relation is None or relation_holds(a.box, b.box, spec.relation):
            return scene
    raise ValueError(f"could not place objects for prompt {prompt!r} at size {size}")


def shapes_dataset(
    num_samples: int,
    seed: int = 0,
    size: int = 64,
    held_out: frozenset[tuple[str, str]] = HELD_OUT_PAIRS,
    kind: str | None = None,
    min_side: int | None = None,
    max_side: int | None = None,
) -> datasets.Dataset:
    """`datasets.Dataset` with columns image (PIL RGB, size x size), text (caption), scene (JSON).

    `kind` draws only scenes of that kind (single, pair, count, mixed); None draws every kind equally often.
    `min_side`/`max_side`: object sides in px (default 14-32 at 64 px; several objects shrink to fit).
    A data mix joins sources: "shapes:kind=single,num_samples=10000 + shapes:num_samples=10000,seed=1"."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    import datasets

    sides = None
    if min_side is not None or max_side is not None:
        default_lo, default_hi = _default_sides(size)
        sides = (default_lo if min_side is None else min_side, default_hi if max_side is None else max_side)
    columns: dict[str, list[Any]] = {"image": [], "text": [], "scene": []}
    for i in tqdm(range(num_samples), desc="shapes", disable=num_samples < 2000):
        # one RNG per sample, seeded by (seed, index): any sample can be rebuilt on its own
        rng = random.Random(f"shapes:{seed}:{i}")
        scene = sample_scene(rng, size=size, kind=kind, exclude_pairs=frozenset(held_out), sides=sides)
        columns["image"].append(png_image_value(render_scene(scene)))
        columns["text"].append(caption_scene(scene, rng))
        columns["scene"].append(scene.to_json())
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "scene": datasets.Value("string")}
    )
    return datasets.Dataset.from_dict(columns, features=features)


__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "HELD_OUT_PAIRS",
    "KINDS",
    "NUMBER_WORDS",
    "PLAIN_BACKGROUNDS",
    "RELATIONS",
    "SHAPES",
    "ObjectSpec",
    "PromptSpec",
    "Scene",
    "ShapeObject",
    "caption_scene",
    "inverse_relation",
    "parse_prompt",
    "relation_holds",
    "render_scene",
    "sample_scene",
    "scene_for_prompt",
    "shape_mask",
    "shapes_dataset",
]
