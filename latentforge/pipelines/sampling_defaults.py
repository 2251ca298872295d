"""A model's recommended sampling settings, kept with the model: `generation_defaults.json` at the root of its
folder (written by `latentforge export --steps/--guidance/--guidance-rescale/--strength/--mask-blur`;
diffusers ignores the file).

`SamplingSettings` is the one vocabulary of these settings: `latentforge generate`, `latentforge eval` and
`latentforge export` read and write it, and `pipeline_kwargs()` turns it into the pipeline's keywords, so
"the default settings" of a model mean one thing; models without the file get FALLBACK."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

FILE = "generation_defaults.json"


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Denoising steps, guidance scale and rescale, and the img2img/inpainting strength and mask blur (the keys
    of the file)."""

    steps: int = 25  # num_inference_steps
    guidance_scale: float = 7.5  # >= 0; <= 1 turns guidance off
    guidance_rescale: float = 0.0  # in [0, 1]
    # img2img and inpainting: share of the schedule to run, in (0, 1] (A1111's "denoising strength" 0.75;
    # inpainting at 1.0 fills the hole with the noise's colours and leaves a seam)
    strength: float = 0.75
    mask_blur: float = 4.0  # inpainting: Gaussian blur of the mask edge, sigma in pixels (A1111's default 4)

    def updated(self, **given: Any) -> SamplingSettings:
        """These settings with every value of `given` that is not None (checked)."""
        given = check_defaults({k: v for k, v in given.items() if v is not None}, "sampling settings")
        return dataclasses.replace(self, **given)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The text-to-image settings as pipeline call keywords (num_inference_steps, guidance_scale,
        guidance_rescale); `strength` and `mask_blur` are the image tasks' own."""
        return {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "guidance_rescale": self.guidance_rescale,
        }


FALLBACK = SamplingSettings()
_NAMES = tuple(f.name for f in dataclasses.fields(SamplingSettings))
IMAGE_TASK_NAMES = ("strength", "mask_blur")  # what only img2img and inpainting read
_RANGES = (  # name, lowest, highest
    ("guidance_scale", 0.0, float("inf")),
    ("guidance_rescale", 0.0, 1.0),
    ("strength", 0.0, 1.0),  # lowest excluded
    ("mask_blur", 0.0, float("inf")),
)


def check_defaults(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` if every key is known and every value in range; ValueError naming `source` otherwise."""
    unknown = sorted(set(values) - set(_NAMES))
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(_NAMES)}")
    steps = values.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{source}: steps must be an integer >= 1, got {steps!r}")
    for name, low, high in _RANGES:
        if name not in values:
            continue
        value = values[name]
        open_low = name == "strength"  # strength 0 would run no step at all
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not is_number or value > high or value < low or (open_low and value == low):
            interval = (
                f"in {'(' if open_low else '['}{low}, {high}]" if math.isfinite(high) else f"finite, >= {low}"
            )
            raise ValueError(f"{source}: {name} must be a number {interval}, got {value!r}")
    return values


def model_settings(model: str | Path, **given: Any) -> SamplingSettings:
    """The settings of `model` (its file, else FALLBACK) with every value of `given` that is not None."""
    return read_defaults(model).updated(**given)


def read_defaults(model: str | Path) -> SamplingSettings:
    """FALLBACK updated with the model folder's generation_defaults.json (if it is a local folder with one)."""
    path = Path(model) / FILE
    if not path.is_file():
        return FALLBACK
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object like {json.dumps(dataclasses.asdict(FALLBACK))}")
    return dataclasses.replace(FALLBACK, **check_defaults(values, str(path)))


def write_defaults(folder: str | Path, settings: SamplingSettings) -> Path:
    """Write `settings` as the folder's generation_defaults.json: the text-to-image settings always, the
    image-task ones (strength, mask_blur) where they differ from FALLBACK."""
    path = Path(folder) / FILE
    values = {
        k: v
        for k, v in check_defaults(dataclasses.asdict(settings), str(path)).items()
        if k not in IMAGE_TASK_NAMES or v != getattr(FALLBACK, k)
    }
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path
