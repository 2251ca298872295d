"""Tests of the built-in synthetic shapes dataset: sampling, rendering, captions and the prompt grammar."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from latentforge.data.shapes import (
    BACKGROUNDS,
    COLORS,
    HELD_OUT_PAIRS,
    SHAPES,
    ObjectSpec,
    Scene,
    ShapeObject,
    caption_scene,
    parse_prompt,
    relation_holds,
    render_scene,
    sample_scene,
    scene_for_prompt,
    shapes_dataset,
)


def _scenes(n: int, size: int = 64, kind: str | None = None) -> list[tuple[Scene, str]]:
    out = []
    for i in range(n):
        rng = random.Random(i)
        scene = sample_scene(rng, size=size, kind=kind)
        out.append((scene, caption_scene(scene, rng)))
    return out


def _nearest_color(rgb: np.ndarray) -> str:
    return min(COLORS, key=lambda name: float(np.sum((np.array(COLORS[name]) - rgb) ** 2)))


def test_vocabulary_contract():
    assert {"red", "green", "blue", "yellow", "purple", "orange", "white", "black"} <= set(COLORS)
    assert set(BACKGROUNDS) <= set(COLORS)
    assert SHAPES == ("circle", "square", "triangle", "star")
    assert all(c in COLORS and s in SHAPES for c, s in HELD_OUT_PAIRS)
    # colours must stay separable by the evaluation's colour segmentation
    min_dist = min(
        np.linalg.norm(np.subtract(COLORS[a], COLORS[b])) for a, b in itertools.combinations(COLORS, 2)
    )
    assert min_dist > 90


def test_sampling_is_deterministic_from_seed():
    assert sample_scene(random.Random(7)) == sample_scene(random.Random(7))
    assert sample_scene(np.random.default_rng(3)) == sample_scene(np.random.default_rng(3))
    assert [sample_scene(random.Random(i)) for i in range(5)] != [
        sample_scene(random.Random(i + 5)) for i in range(5)
    ]


def test_dataset_is_reproducible_and_well_formed():
    a, b, c = shapes_dataset(12, seed=1), shapes_dataset(12, seed=1), shapes_dataset(12, seed=2)
    assert a.column_names == ["image", "text", "scene"]
    assert a["text"] == b["text"] and a["scene"] == b["scene"]
    assert np.array_equal(np.asarray(a[3]["image"]), np.asarray(b[3]["image"]))
    assert a["text"] != c["text"]
    row = a[0]
    assert row["image"].mode == "RGB" and row["image"].size == (64, 64)
    scene = Scene.from_json(row["scene"])
    assert np.array_equal(np.asarray(row["image"]), np.asarray(render_scene(scene)))
    with pytest.raises(ValueError, match="num_samples"):
        shapes_dataset(0)


def test_json_round_trip():
    scene = sample_scene(random.Random(1), kind="mixed")
    assert Scene.from_json(scene.to_json()) == scene


@pytest.mark.parametrize("size", [32, 64, 128])
def test_boxes_inside_disjoint_and_sized(size):
    for scene, _ in _scenes(300, size=size):
        assert 1 <= len(scene.objects) <= 4 and scene.size == size
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert 4 <= x1 - x0 <= size // 2 + 1
        for a, b in itertools.combinations(scene.objects, 2):
            # disjoint boxes are separated along x or y
            assert any(
                relation_holds(a.box, b.box, r)
                for r in ("to the left of", "to the right of", "above", "below")
            )
        assert scene.background not in {o.color for o in scene.objects}


def test_held_out_pairs_never_sampled():
    seen = Counter((o.color, o.shape) for scene, _ in _scenes(2000) for o in scene.objects)
    assert not set(seen) & HELD_OUT_PAIRS
    # every colour and every shape still appears in training
    assert {c for c, _ in seen} == set(COLORS) and {s for _, s in seen} == set(SHAPES)
    custom = frozenset({("red", "circle")})
    assert all(
        (o.color, o.shape) != ("red", "circle")
        for i in range(500)
        for o in sample_scene(random.Random(i), exclude_pairs=custom).objects
    )


def test_kinds():
    for scene, _ in _scenes(50, kind="count"):
        assert 2 <= len(scene.objects) <= 4 and len({(o.color, o.shape) for o in scene.objects}) == 1
    for scene, _ in _scenes(50, kind="mixed"):
        assert 3 <= len(scene.objects) <= 4 and len({(o.color, o.shape) for o in scene.objects}) == 2
    for scene, _ in _scenes(50, kind="pair"):
        assert len(scene.objects) == 2 and scene.objects[0].color + scene.objects[0].shape != (
            scene.objects[1].color + scene.objects[1].shape
        )
    with pytest.raises(ValueError, match="kind"):
        sample_scene(random.Random(0), kind="crowd")
    with pytest.raises(ValueError, match="rng"):
        sample_scene("seed")


def test_object_sides():
    sides = [
        (scene.objects, o.box[2] - o.box[0])
        for i in range(80)
        for scene in [sample_scene(random.Random(i), sides=(24, 44))]
        for o in scene.objects
    ]
    assert all(24 <= side <= 44 for _, side in sides)
    # one object may be as large as asked; several shrink to fit (at most half the image each)
    assert max(side for objs, side in sides if len(objs) == 1) > 36
    assert max(side for objs, side in sides if len(objs) > 1) <= 28
    with pytest.raises(ValueError, match=r"min_side <= max_side.*got 30 and 20"):
        sample_scene(random.Random(0), sides=(30, 20))
    with pytest.raises(
        ValueError, match=r"[34] objects of at least 34 px do not fit in a 64 px image: lower min_side"
    ):
        sample_scene(random.Random(2), kind="mixed", sides=(34, 40))


def test_captions_agree_with_scenes():
    relations = Counter()
    for scene, caption in _scenes(600):
        spec = parse_prompt(caption)
        truth = Counter((o.color, o.shape) for o in scene.objects)
        assert {(o.color, o.shape): o.count for o in spec.objects} == dict(truth), caption
        if spec.relation:
            relations[spec.relation] += 1
            first, second = spec.objects
            box = {(o.color, o.shape): o.box for o in scene.objects}
            assert relation_holds(box[first[1:]], box[second[1:]], spec.relation), caption
        if spec.background is not None:
            assert spec.background == scene.background
        else:
            assert scene.background == "white", caption
    assert set(relations) == {"to the left of", "to the right of", "above", "below"}


def test_render_colours_and_antialiasing():
    for scene, _ in _scenes(100):
        pixels = np.asarray(render_scene(scene)).astype(int)
        assert pixels.shape == (scene.size, scene.size, 3)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            # a point well inside each shape (a triangle is widest near its base)
            cx, cy = (x0 + x1) // 2, (y0 + 2 * y1) // 3 if obj.shape == "triangle" else (y0 + y1) // 2
            assert _nearest_color(pixels[cy, cx]) == obj.color
    scene = Scene([ShapeObject("circle", "red", (8, 8, 40, 40))], background="blue", size=64)
    pixels = np.asarray(render_scene(scene)).astype(int)
    assert _nearest_color(pixels[0, 63]) == "blue"
    # supersampled edges give in-between colours, not just the two flat ones
    assert len({tuple(p) for p in pixels.reshape(-1, 3)}) > 10


@pytest.mark.parametrize(
    "prompt, objects, relation, background",
    [
        ("a red circle", [(1, "red", "circle")], None, None),
        ("An Orange Star.", [(1, "orange", "star")], None, None),
        ("three blue squares on a yellow background", [(3, "blue", "square")], None, "yellow"),
        (
            "a red circle to the left of a blue square",
            [(1, "red", "circle"), (1, "blue", "square")],
            "to the left of",
            None,
        ),
        (
            "two green stars and one pink triangle",
            [(2, "green", "star"), (1, "pink", "triangle")],
            None,
            None,
        ),
        (
            "a gray star below a white circle on an orange background",
            [(1, "gray", "star"), (1, "white", "circle")],
            "below",
            "orange",
        ),
    ],
)
def test_parse_prompt(prompt, objects, relation, background):
    spec = parse_prompt(prompt)
    assert spec.objects == [ObjectSpec(*o) for o in objects]
    assert spec.relation == relation and spec.background == background


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("a red hexagon", "shape"),
        ("a magenta circle", "colour"),
        ("five red circles", "cannot read"),
        ("two red circle", "plural"),
        ("a red circle above two blue squares", "relation"),
        ("a red circle and a red circle", "differ"),
        ("a red circle on a plaid background", "background"),
        ("a red circle and a blue square and a green star", "at most two"),
        ("a photo of a cat", "cannot read"),
    ],
)
def test_parse_prompt_rejects_outside_grammar(prompt, message):
    with pytest.raises(ValueError, match=message):
        parse_prompt(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "a red circle above a blue star on a black background",
        "four yellow squares",
        "a cyan triangle and two pink stars",
    ],
)
def test_scene_for_prompt_satisfies_prompt(prompt):
    spec = parse_prompt(prompt)
    for seed in range(20):
        scene = scene_for_prompt(prompt, seed)
        assert Counter((o.color, o.shape) for o in scene.objects) == {
            (o.color, o.shape): o.count for o in spec.objects
        }
        if spec.relation:
            assert relation_holds(scene.objects[0].box, scene.objects[1].box, spec.relation)
        assert scene.background == (spec.background or scene.background)
        assert scene.background not in {o.color for o in spec.objects}
    # held-out pairs are allowed here: evaluation asks for them on purpose
    assert scene_for_prompt("a blue triangle", 0).objects[0].color == "blue"


def test_import_is_lazy():
    code = "import sys, latentforge.data.shapes; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
