"""benchmarks/regrade_grids.py: a saved compositional report read again from its grid gives the readings the
images themselves give."""

from __future__ import annotations

import random

import pytest
from PIL import ImageFilter
from pipeline_helpers import benchmark_script, one_thread  # noqa: F401  (autouse fixture)

from latentforge.data.shapes import render_scene, scene_for_prompt
from latentforge.evaluation.compositional import compositional_report, make_prompt_set, score_images


@pytest.fixture(scope="module")
def regrade():
    return benchmark_script("regrade_grids")


def test_grid_images_read_back_as_the_images(regrade, tmp_path, capsys):
    prompts = make_prompt_set(num_per_category=2, seed=1)  # 24 prompts: a 5x5 grid with one empty cell
    renders = [render_scene(scene_for_prompt(p.spec, random.Random(i))) for i, p in enumerate(prompts)]
    # every other image blurred hard: objects that fit less, so the readings are not all at their maximum
    images = [im.filter(ImageFilter.GaussianBlur(2.5)) if i % 2 else im for i, im in enumerate(renders)]
    result = score_images(prompts, images)
    compositional_report(result, images, {}).write(tmp_path / "seed0")
    rows, cut = regrade.grid_images(tmp_path / "seed0")
    assert [r["prompt"] for r in rows] == [p.text for p in prompts]
    assert [im.tobytes() for im in cut] == [im.tobytes() for im in images]

    scores = regrade.regrade([tmp_path / "seed0"])  # both splits together
    fits = [o.fit for detection in result.detections for o in detection.objects]
    assert scores["images"] == len(prompts) and scores["objects"] == len(fits)
    assert scores["object_fit"] == pytest.approx(sum(fits) / len(fits))
    assert scores["clean_shapes"] == pytest.approx(sum(result.clean) / len(prompts))
    assert 0.3 < scores["clean_shapes"] < 0.9  # the sharp half clean, the blurred half mostly not
    counts = [
        (i, len(d.objects))
        for i, (p, d) in enumerate(zip(prompts, result.detections))
        if p.category == "single_object"
    ]
    single = [n for _, n in counts]
    assert scores["single_objects"] == pytest.approx(sum(single) / len(single))
    assert scores["single_exactly_one"] == pytest.approx(sum(n == 1 for n in single) / len(single))
    sharp = [n for i, n in counts if not i % 2]
    assert sharp and all(n == 1 for n in sharp)  # a clean render of one object reads as exactly one
    regrade.main([f"renders={tmp_path / 'seed0'},{tmp_path / 'seed0'}"])
    assert f"renders: {2 * len(prompts)} images" in capsys.readouterr().out
