"""The call keywords are written once (`CallArgs`): the signatures, the docs, the validation and the README
list them alike, so they cannot drift apart."""

import dataclasses
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pipeline_helpers import (
    PROMPT,
    box_mask,
    guarded_pipelines,
    one_thread,  # noqa: F401  (autouse fixture)
    random_image,
    tiny,
)

from latentforge import ImageToImagePipeline, InpaintPipeline, TextToImagePipeline
from latentforge.pipelines.call_args import OUTPUT_TYPES, TASKS, CallArgs, task_fields

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"txt2img": TextToImagePipeline, "img2img": ImageToImagePipeline, "inpaint": InpaintPipeline}
IMAGE, MASK = random_image(), box_mask()
INPUTS = {"txt2img": {}, "img2img": {"image": IMAGE}, "inpaint": {"image": IMAGE, "mask_image": MASK}}
FIELDS = [f.name for f in dataclasses.fields(CallArgs)]


@pytest.fixture(scope="module")
def pipes():
    with guarded_pipelines() as pipelines:
        yield pipelines


def _doc_keywords(doc: str) -> list[str]:
    section = doc.split("Args:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\w+): ", section, flags=re.MULTILINE)


@pytest.mark.parametrize("task", TASKS)
def test_signature_fields_and_docs_name_the_same_keywords(task):
    call = CLASSES[task].__call__
    parameters = list(inspect.signature(call).parameters.values())
    assert parameters[0].name == "self"
    names = [p.name for p in parameters[1:]]
    assert names == [f.name for f in task_fields(task)]
    assert names == _doc_keywords(call.__doc__)
    assert set(names) <= set(FIELDS)
    own = {"txt2img": ["prompt"], "img2img": ["prompt", "image", "strength"]}.get(
        task, ["prompt", "image", "mask_image", "strength", "mask_blur", "paste_back"]
    )
    positional = [p.name for p in parameters[1:] if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == own  # diffusers' order; every other keyword is keyword-only
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[1 + len(own) :])


def test_every_field_is_taken_by_some_task_and_task_defaults():
    assert {f.name for task in TASKS for f in task_fields(task)} == set(FIELDS)
    assert CallArgs.bind("img2img", PROMPT, IMAGE).strength == 0.8
    assert CallArgs.bind("inpaint", PROMPT, IMAGE, MASK).strength == 1.0
    assert CallArgs.bind("inpaint", PROMPT, IMAGE, MASK, 0.5, 2.0, False).mask_blur == 2.0
    for task in TASKS:
        defaults = {n: p.default for n, p in inspect.signature(CLASSES[task].__call__).parameters.items()}
        defaults.pop("self")
        bound = CallArgs.bind(task)  # every default applied
        assert {name: getattr(bound, name) for name in defaults} == defaults


# One invalid value per CallArgs field (task, keywords): each must be rejected by the validation with a
# ValueError that names the field. A new field fails the coverage check below until it is validated here.
INVALID = {
    "prompt": ("txt2img", {"prompt": 5}),
    "image": ("img2img", {"image": 5}),
    "mask_image": ("inpaint", {"mask_image": 5}),
    "strength": ("img2img", {"strength": 1.5}),
    "mask_blur": ("inpaint", {"mask_blur": -1.0}),
    "paste_back": ("inpaint", {"paste_back": "no"}),
    "negative_prompt": ("txt2img", {"negative_prompt": 5}),
    "num_inference_steps": ("txt2img", {"num_inference_steps": 0}),
    "guidance_scale": ("txt2img", {"guidance_scale": -1.0}),
    "guidance_rescale": ("txt2img", {"guidance_rescale": 2.0}),
    "num_images_per_prompt": ("txt2img", {"num_images_per_prompt": 0}),
    "generator": ("txt2img", {"generator": "seed"}),
    "latents": ("txt2img", {"latents": torch.zeros(1, 4, 3, 3)}),
    "prompt_embeds": ("txt2img", {"prompt": None, "prompt_embeds": torch.zeros(77, 32)}),
    "negative_prompt_embeds": ("txt2img", {"negative_prompt_embeds": torch.zeros(3, 77, 32)}),
    "clip_skip": ("txt2img", {"clip_skip": -1}),
    "height": ("txt2img", {"height": "32"}),
    "width": ("txt2img", {"width": 32.0}),
    "eta": ("txt2img", {"eta": -1.0}),
    "output_type": ("txt2img", {"output_type": "jpeg"}),
    "return_dict": ("txt2img", {"return_dict": None}),
    "callback_on_step_end": ("txt2img", {"callback_on_step_end": 5}),
}


def test_the_invalid_values_cover_every_field():
    assert set(INVALID) == set(FIELDS)


@pytest.mark.parametrize("name", FIELDS)
def test_validation_rejects_each_field_naming_it(pipes, name):
    task, kwargs = INVALID[name]
    args = CallArgs(**{"prompt": PROMPT, **INPUTS[task], **kwargs})
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        pipes[task].generate(args)


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("txt2img", {"image": IMAGE}),
        ("txt2img", {"strength": 0.5}),
        ("img2img", {"mask_image": MASK}),
        ("img2img", {"paste_back": False}),
        ("img2img", {"mask_blur": 2}),
    ],
)
def test_a_keyword_of_another_task_is_rejected(pipes, task, kwargs):
    (name,) = kwargs
    args = CallArgs(prompt=PROMPT, **{**INPUTS[task], **kwargs})
    with pytest.raises(ValueError, match=rf"^{name}: a {task} call takes no {name}"):
        pipes[task].generate(args)


@pytest.mark.parametrize("task", TASKS)
def test_an_unknown_keyword_is_a_type_error_naming_it(pipes, task):
    with pytest.raises(TypeError, match=r"__call__\(\) got an unexpected keyword argument 'guidance'"):
        pipes[task](PROMPT, **INPUTS[task], guidance=7.5)


def test_a_keyword_of_another_task_is_a_type_error_in_a_call(pipes):
    with pytest.raises(TypeError, match="'image'"):
        pipes["txt2img"](PROMPT, image=IMAGE)
    with pytest.raises(TypeError, match="'mask_image'"):
        pipes["img2img"](PROMPT, IMAGE, mask_image=MASK)
    with pytest.raises(TypeError, match="positional"):
        pipes["txt2img"](PROMPT, "a negative prompt")  # every keyword but prompt is keyword-only


def test_call_and_generate_are_the_same_call():
    pipe = TextToImagePipeline.from_components(tiny(fresh=True))
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_inference_steps": 2, "generator": 3, "output_type": "np"}
    called = pipe(PROMPT, **kwargs).images
    generated = pipe.generate(CallArgs(prompt=PROMPT, **kwargs)).images
    np.testing.assert_array_equal(called, generated)


def test_readme_names_only_real_keywords():
    text = (ROOT / "README.md").read_text()
    start = text.index("The keywords follow diffusers (")
    paragraph = text[start : text.index("\n\n", start)]
    values = re.findall(r"`output_type` = ((?:`\w+`/?)+)", paragraph)
    assert values, "the paragraph no longer lists output_type's values"
    assert set(re.findall(r"`(\w+)`", values[0])) <= set(OUTPUT_TYPES)
    named = re.findall(r"`(\w+)`", re.sub(r"= (`\w+`/?)+", "", paragraph))
    assert named and set(named) <= set(FIELDS), sorted(set(named) - set(FIELDS))
    for task, phrase in (("img2img", "img2img adds"), ("inpaint", "inpainting adds")):
        added = re.search(rf"{phrase} ([^;.]*)", paragraph).group(1)
        own = {f.name for f in task_fields(task)} - {f.name for f in task_fields("txt2img")}
        assert set(re.findall(r"`(\w+)`", added)) == own
