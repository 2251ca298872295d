"""The inpainting check: its cases are well formed, its scoring passes a right answer and fails wrong ones,
and `latentforge eval inpainting` writes a report."""

from __future__ import annotations

import copy
import json

from latentforge.cli import main
from latentforge.data.shapes import ShapeObject, parse_prompt, render_scene
from latentforge.evaluation.inpainting import (
    KEPT_LEFT,
    MASK_RIGHT,
    left_half_mask,
    make_inpaint_cases,
    score_case,
)
from latentforge.models.components import Components


def test_cases_are_deterministic_and_say_what_to_paint_in_the_training_grammar():
    cases = make_inpaint_cases(40, seed=3)
    assert cases == make_inpaint_cases(40, seed=3) and cases != make_inpaint_cases(40, seed=4)
    for case in cases:
        assert all(o.box[0] >= KEPT_LEFT for o in case.scene.objects)  # the left half is empty
        assert case.color != case.scene.background
        spec = parse_prompt(case.prompt)
        assert spec.objects == [(1, case.color, case.shape)]
        named = (
            None if case.scene.background == "white" else case.scene.background
        )  # captions leave white unnamed
        assert spec.background == named
    mask = left_half_mask()
    assert mask.getpixel((MASK_RIGHT - 1, 10)) == 255 and mask.getpixel((MASK_RIGHT, 10)) == 0


def test_scoring_passes_the_asked_object_in_the_mask_and_nothing_else():
    case = make_inpaint_cases(1, seed=0)[0]
    source = render_scene(case.scene)
    right = copy.deepcopy(case.scene)
    right.objects.append(ShapeObject(case.shape, case.color, (6, 20, 26, 40)))
    assert score_case(case, source, render_scene(right)) == (True, True)
    assert score_case(case, source, source) == (False, True)  # nothing painted
    wrong_place = copy.deepcopy(case.scene)
    wrong_place.objects = [
        ShapeObject(case.shape, case.color, (6, 20, 26, 40))
    ]  # the kept half lost its objects
    assert score_case(case, source, render_scene(wrong_place)) == (True, False)


def test_eval_inpainting_command_writes_a_report(tmp_path):
    model = tmp_path / "tiny"
    Components.from_architecture("tiny", seed=0).save_pretrained(model)
    argv = ["eval", "inpainting", "--model", str(model), "--num-prompts", "3", "--steps", "2"]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "inpainting.json").read_text())
    values = {m["name"]: m["value"] for m in report["metrics"]}
    assert set(values) == {"inpainting", "object_in_mask", "outside_unchanged"}
    assert all(0 <= v <= 1 for v in values.values()) and len(report["rows"]) == 3
    assert (tmp_path / "out" / "inpainting.png").is_file()
