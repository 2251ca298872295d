"""benchmarks/position_probe.py: its colour reading follows where the objects are, the training scenes' reading
shows each relation on its own axis, and on the shipped model it finds the text encoder's left and right alike."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_helpers import benchmark_script, one_thread  # noqa: F401  (autouse fixture)

from latentforge.data.shapes import Scene, ShapeObject, render_scene
from latentforge.resources import DEFAULT_MODEL


@pytest.fixture(scope="module")
def probe():
    return benchmark_script("position_probe")


def test_the_colour_offset_follows_the_objects(probe):
    left = ShapeObject("circle", "red", (4, 24, 20, 40))
    right = ShapeObject("square", "blue", (40, 24, 56, 40))
    image = np.asarray(render_scene(Scene([left, right])), float)
    dx, dy = probe.colour_offset(image, "red", "blue")
    assert dx < -20 and abs(dy) < 1
    assert probe.colour_offset(image, "blue", "red")[0] == pytest.approx(-dx)


def test_the_training_scenes_show_each_relation_on_its_axis(probe):
    offsets = probe.data_offsets()
    assert offsets["to the left of"][0] < -8 < 8 < offsets["to the right of"][0]
    assert offsets["above"][1] < -8 < 8 < offsets["below"][1]
    assert all(abs(offsets[r][1]) < 3 for r in ("to the left of", "to the right of"))


def test_on_the_shipped_model_left_and_right_read_alike(probe):
    from latentforge.evaluation.sampling import load_pipeline

    cosines = probe.text_cosines(load_pipeline(str(DEFAULT_MODEL), "cpu"))
    # the shipped text encoder (docs/ablations.md, "Position"); a model trained to tell them apart moves them
    assert cosines["left/right"] > 0.99 and cosines["above/below"] > 0.99
