"""The keywords of a pipeline call, written once.

`CallArgs` holds every keyword with diffusers' name and default; each field's metadata says which tasks
take it and what it means. From it follow the three pipelines' `__call__` (`call_method`): its signature
(`call_signature`), its binding of the arguments (`CallArgs.bind`) and its "Args:" docs; `call_plan.py`
checks a `CallArgs` field by field.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from latentforge.pipelines import image_inputs
from latentforge.pipelines.denoising import StepCallback

TASKS = ("txt2img", "img2img", "inpaint")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def _keyword(
    default: Any,
    doc: str,
    tasks: tuple[str, ...] = TASKS,
    positional: bool = False,
    task_defaults: dict[str, Any] | None = None,
) -> Any:
    """A CallArgs field: `doc` is its line in the docs; `positional` fields come first in `__call__`."""
    metadata = {"doc": doc, "tasks": tasks, "positional": positional, "task_defaults": task_defaults or {}}
    return dataclasses.field(default=default, metadata=metadata)


# eq=False: tensors and images do not compare as values.
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class CallArgs:
    """One pipeline call. The defaults are txt2img's and inpainting's; `bind` applies a task's own."""

    prompt: str | list[str] | None = _keyword(
        None, "the text, or a list of texts; A1111 emphasis like (word:1.3) and BREAK work", positional=True
    )
    image: image_inputs.ImageInput = _keyword(
        None,
        "input image(s): path, PIL image(s), numpy array or tensor in [0, 1]",
        ("img2img", "inpaint"),
        positional=True,
    )
    mask_image: image_inputs.ImageInput = _keyword(
        None,
        "mask(s) of the image's size: white = repaint, black = keep, grey = blend",
        ("inpaint",),
        positional=True,
    )
    strength: float = _keyword(
        1.0,
        "share of the schedule to run, in (0, 1]: int(num_inference_steps x strength) steps",
        ("img2img", "inpaint"),
        positional=True,
        task_defaults={"img2img": 0.8},
    )
    mask_blur: float = _keyword(
        0.0, "Gaussian blur of the mask edge, sigma in pixels", ("inpaint",), positional=True
    )
    paste_back: bool = _keyword(
        True, "keep the input's exact pixels where the (blurred) mask is 0", ("inpaint",), positional=True
    )
    negative_prompt: str | list[str] | None = _keyword(
        None, "what to steer away from: one text for all prompts, or one per prompt (with guidance)"
    )
    num_inference_steps: int = _keyword(50, "denoising steps of the whole schedule")
    guidance_scale: float = _keyword(7.5, "classifier-free guidance scale, >= 0; <= 1 turns guidance off")
    guidance_rescale: float = _keyword(0.0, "in [0, 1]: rescale guided noise to the conditional std")
    num_images_per_prompt: int = _keyword(1, "images made for each prompt")
    generator: torch.Generator | int | list[torch.Generator | int] | None = _keyword(
        None, "torch.Generator or int seed, or one per image; None: seeded from torch's global RNG"
    )
    latents: torch.Tensor | None = _keyword(
        None, "the starting noise (images, latent channels, height / VAE factor, width / VAE factor)"
    )
    prompt_embeds: torch.Tensor | None = _keyword(None, "text-encoder output (B, L, D), instead of prompt")
    negative_prompt_embeds: torch.Tensor | None = _keyword(None, "the same for negative_prompt")
    clip_skip: int | None = _keyword(None, "skip the last N text-encoder layers (diffusers' convention)")
    height: int | None = _keyword(
        None, "output height in pixels, a multiple of the VAE factor; None: the model's or image's"
    )
    width: int | None = _keyword(None, "output width in pixels, likewise")
    eta: float = _keyword(0.0, "DDIM's eta, >= 0 (schedulers without eta ignore it)")
    output_type: str = _keyword("pil", "pil, np (B, H, W, 3), pt (B, 3, H, W) in [0, 1], or latent")
    return_dict: bool = _keyword(True, "a PipelineOutput; False: the tuple (images, None)")
    callback_on_step_end: StepCallback | None = _keyword(
        None, "f(pipe, step, timestep, {'latents': ...}) after each step; may return new latents"
    )

    @classmethod
    def bind(cls, task: str, /, *args: Any, **kwargs: Any) -> CallArgs:
        """The arguments of a `task` call as `__call__` takes them, with the task's defaults; TypeError as
        Python gives it for an unknown or repeated keyword."""
        bound = call_signature(task).bind(*args, **kwargs)
        bound.apply_defaults()
        return cls(**bound.arguments)


def task_fields(task: str) -> list[dataclasses.Field]:
    """The CallArgs fields a `task` call takes, in signature order."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return [f for f in dataclasses.fields(CallArgs) if task in f.metadata["tasks"]]


@functools.cache
def call_signature(task: str) -> inspect.Signature:
    """`__call__`'s parameters for `task`: prompt and the task's inputs positional, the rest keyword-only."""
    kinds = {True: inspect.Parameter.POSITIONAL_OR_KEYWORD, False: inspect.Parameter.KEYWORD_ONLY}
    return inspect.Signature(
        [
            inspect.Parameter(
                f.name,
                kinds[f.metadata["positional"]],
                default=f.metadata["task_defaults"].get(task, f.default),
                annotation=f.type,
            )
            for f in task_fields(task)
        ]
    )


def call_method(cls: type, returns: type) -> Callable[..., Any]:
    """`__call__` for a pipeline class with `task` and `generate(CallArgs)`: it binds its arguments into a
    CallArgs (TypeError for an unknown keyword, as Python words it) and runs `generate`; its signature and
    "Args:" docs are made from the fields `cls.task` takes."""
    task = cls.task

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            call = CallArgs.bind(task, *args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{__call__.__qualname__}() {err}") from None
        return self.generate(call)

    signature = call_signature(task)
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    __call__.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *signature.parameters.values()], return_annotation=returns
    )
    __call__.__qualname__ = f"{cls.__qualname__}.__call__"
    __call__.__doc__ = (
        f"Make images ({task}): `generate(CallArgs.bind({task!r}, ...))`.\n\nArgs:\n"
        + "".join(f"    {f.name}: {f.metadata['doc']}\n" for f in task_fields(task))
        + f"\nReturns:\n    {returns.__name__}(images=...), or (images, None) with return_dict=False.\n"
    )
    return __call__
