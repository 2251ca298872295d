"""The compositional benchmark: its prompt set, GenEval's scoring rules, and a tiny model end to end."""

from __future__ import annotations

import numpy as np
import pytest

from latentforge.data.shapes import HELD_OUT_PAIRS, parse_prompt
from latentforge.evaluation.compositional import (
    CATEGORIES,
    OUTSIDE_OVERALL,
    CompositionalPrompt,
    CompositionalResult,
    colors_follow_prompt,
    compositional_report,
    count_is_exact,
    evaluate_compositional,
    make_prompt_set,
    score_detection,
    shapes_are_clean,
)
from latentforge.evaluation.detector import DetectedObject, Detection


@pytest.fixture(scope="module")
def tiny_pipeline():
    """Our text-to-image pipeline over tiny random components (32x32 images)."""
    from latentforge.evaluation.sampling import load_pipeline
    from latentforge.models.components import Components
    from latentforge.pipelines import TextToImagePipeline

    components = Components.from_architecture("tiny", seed=0)
    return load_pipeline(TextToImagePipeline.from_components(components), "cpu")


def _pairs(text: str) -> set[tuple[str, str]]:
    return {(o.color, o.shape) for o in parse_prompt(text).objects}


def test_prompt_set_is_fixed_by_its_seed_and_covers_every_category():
    prompts = make_prompt_set(num_per_category=20, seed=7)
    assert prompts == make_prompt_set(num_per_category=20, seed=7)
    assert [p.text for p in prompts] != [p.text for p in make_prompt_set(num_per_category=20, seed=8)]
    for held_out in (False, True):
        chosen = [p for p in prompts if p.held_out == held_out]
        assert [p.category for p in chosen] == [c for c in CATEGORIES for _ in range(20)]
    assert len({p.text for p in prompts}) > 150  # varied, not one prompt repeated
    assert len(make_prompt_set(3, held_out_per_category=0)) == 3 * len(CATEGORIES)


def test_prompts_follow_the_grammar_and_the_held_out_split():
    for prompt in make_prompt_set(num_per_category=30, seed=1):
        spec = parse_prompt(prompt.text)  # every prompt reads back with the data grammar
        pairs = _pairs(prompt.text)
        assert bool(pairs & HELD_OUT_PAIRS) == prompt.held_out, prompt
        if prompt.category in ("two_objects", "position", "color_attribution"):
            assert len(spec.objects) == 2 and spec.objects[0].shape != spec.objects[1].shape
        if prompt.category == "color_attribution":
            assert spec.objects[0].color != spec.objects[1].color
        if prompt.category == "position":
            assert spec.relation is not None
        if prompt.category == "counting":
            assert spec.objects[0].count in (2, 3, 4)
        # unnamed background means white in the training captions, so white objects name another one
        colors = {o.color for o in spec.objects}
        assert (spec.background is not None) == ("white" in colors)
        assert spec.background not in colors


def _detection(*objects: tuple[str, str, tuple[int, int, int, int]]) -> Detection:
    found = [
        DetectedObject(shape, color, box, (box[2] - box[0]) * (box[3] - box[1]))
        for color, shape, box in objects
    ]
    return Detection("white", tuple(sorted(found, key=lambda o: -o.area)))


def test_scoring_rules_per_category():
    circle, star = ("red", "circle", (0, 0, 20, 20)), ("blue", "star", (30, 30, 50, 50))

    def score(category, text, *objects):
        return score_detection(CompositionalPrompt(text, category), _detection(*objects))[0]

    # single_object ignores colour (as GenEval); colors does not
    assert score("single_object", "a green circle", circle)
    assert not score("colors", "a green circle", circle)
    assert score("colors", "a red circle", circle, star)
    assert not score("single_object", "a red square", circle, star)
    # counting is exact
    two = [("red", "circle", (0, 0, 10, 10)), ("red", "circle", (20, 0, 30, 10))]
    assert score("counting", "two red circles", *two)
    assert not score("counting", "three red circles", *two)
    assert not score("counting", "two red circles", *two, ("red", "circle", (40, 0, 50, 10)))
    # two objects: both shapes; attribution: both with their colours
    assert score("two_objects", "a blue circle and a red star", circle, star)
    assert not score("color_attribution", "a blue circle and a red star", circle, star)
    assert score("color_attribution", "a red circle and a blue star", circle, star)
    assert not score("two_objects", "a red circle and a blue square", circle, star)
    # position: boxes separated along the named axis, between the largest object of each shape
    assert score("position", "a red circle to the left of a blue star", circle, star)
    assert score("position", "a red circle above a blue star", circle, star)
    assert not score("position", "a red circle below a blue star", circle, star)
    assert not score("position", "a red circle to the right of a blue star", circle, star)
    small_star_left = ("blue", "star", (0, 40, 5, 45))
    assert score("position", "a red circle to the left of a blue star", circle, star, small_star_left)


def test_color_only_reading_ignores_shapes_but_not_colours_or_background():
    red_blob, blue_blob = ("red", "triangle", (0, 0, 20, 20)), ("blue", "square", (30, 30, 50, 50))

    def colors_ok(text, *objects, background="white"):
        detection = Detection(background, _detection(*objects).objects)
        return colors_follow_prompt(CompositionalPrompt(text, "colors"), detection)

    assert colors_ok("a red circle and a blue star", red_blob, blue_blob)  # shapes wrong, colours right
    assert not colors_ok("a red circle and a green star", red_blob, blue_blob)
    assert not colors_ok("a red circle", blue_blob)
    # the background: the named one; any when the prompt names none
    assert colors_ok("a red circle", red_blob, background="black")
    assert colors_ok(
        "a white circle on a black background", ("white", "square", (0, 0, 9, 9)), background="black"
    )
    assert not colors_ok("a red circle on a gray background", red_blob)


def test_clean_shapes_reading_counts_clean_objects_of_any_shape_and_colour():
    def clean(text, *objects):
        detection = Detection(
            "white", tuple(DetectedObject(s, c, (0, 0, 9, 9), 81, fit) for c, s, fit in objects)
        )
        return shapes_are_clean(CompositionalPrompt(text, "two_objects"), detection)

    # wrong shapes and colours, but two clean objects for two named: clean
    assert clean("a red circle and a blue star", ("green", "square", 0.97), ("red", "triangle", 0.92))
    assert not clean("a red circle and a blue star", ("red", "circle", 0.97), ("blue", "star", 0.7))  # ragged
    assert not clean("a red circle and a blue star", ("red", "circle", 1.0))  # one object for two
    assert clean("three red circles", *[("red", "circle", 0.95)] * 3)
    assert not clean("three red circles", *[("red", "circle", 0.95)] * 4)
    assert not clean("a red circle")
    # exact_count: the number alone, however ragged or misnamed the objects
    exact = Detection("white", (DetectedObject("star", "green", (0, 0, 9, 9), 81, 0.3),) * 2)
    assert count_is_exact(CompositionalPrompt("a red circle and a blue star", "two_objects"), exact)
    assert not count_is_exact(CompositionalPrompt("a red circle", "single_object"), exact)  # a spurious blob
    assert not count_is_exact(CompositionalPrompt("three red circles", "counting"), exact)
    # object_fit: the mean fit of every object detected in the split (0 when nothing is found)
    prompts = [CompositionalPrompt("a red circle", "single_object")] * 2
    detections = [
        Detection("white", (DetectedObject("circle", "red", (0, 0, 9, 9), 81, 0.9),)),
        Detection("white", (DetectedObject("star", "red", (0, 0, 9, 9), 81, 0.5),) * 2),
    ]
    result = CompositionalResult(prompts, [True, False], detections=detections)
    result.color_correct, result.clean, result.exact = [True, True], [True, False], [True, False]
    scores = result.accuracy()
    assert scores["object_fit"] == pytest.approx((0.9 + 0.5 + 0.5) / 3) and scores["clean_shapes"] == 0.5
    assert scores["exact_count"] == 0.5
    result.detections = [Detection("white", ())] * 2
    assert result.accuracy()["object_fit"] == 0.0


def test_tiny_random_model_end_to_end(tiny_pipeline):
    prompts = make_prompt_set(num_per_category=1, seed=0)
    result, images = evaluate_compositional(
        tiny_pipeline, prompts, images_per_prompt=1, seed=0, num_inference_steps=2, batch_size=8
    )
    assert len(images) == len(result.correct) == 2 * len(CATEGORIES)
    summary = result.summary()
    for split in ("in_distribution", "held_out"):
        assert set(summary[split]) == set(CATEGORIES) | {"overall", *OUTSIDE_OVERALL}
        assert all(0.0 <= v <= 1.0 for v in summary[split].values())
    assert summary["num_images"] == 12
    # same seed, same images: the benchmark is reproducible, exactly for the same batch size and to one 8-bit
    # level across batch sizes (which change the order of float sums)
    again, images_again = evaluate_compositional(
        tiny_pipeline, prompts[:3], seed=0, num_inference_steps=2, batch_size=2
    )
    pixels = lambda image: np.asarray(image).astype(int)  # noqa: E731
    assert all(np.abs(pixels(a) - pixels(b)).max() <= 1 for a, b in zip(images[:3], images_again))
    _, images_repeat = evaluate_compositional(
        tiny_pipeline, prompts[:3], seed=0, num_inference_steps=2, batch_size=2
    )
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(images_again, images_repeat))
    # guidance_rescale reaches the pipeline
    rescaled, images_rescaled = evaluate_compositional(
        tiny_pipeline, prompts[:3], seed=0, num_inference_steps=2, batch_size=2, guidance_rescale=0.7
    )
    assert not any(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images[:3], images_rescaled))
    report = compositional_report(result, images, {"steps": 2})
    assert [m.name for m in report.metrics][:7] == [f"in_distribution/{c}" for c in CATEGORIES] + [
        "in_distribution/overall"
    ]
    assert len(report.rows) == 12 and report.marks == result.correct
    assert [r["colors_ok"] for r in report.rows] == result.color_correct
    assert [r["count_exact"] for r in report.rows] == result.exact and len(result.exact) == 12


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_per_category"):
        make_prompt_set(0)
    with pytest.raises(ValueError, match="held_out_per_category"):
        make_prompt_set(2, held_out_per_category=-1)
    with pytest.raises(ValueError, match="images_per_prompt"):
        evaluate_compositional(None, make_prompt_set(1), images_per_prompt=0)
