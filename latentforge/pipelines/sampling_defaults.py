"""A model's recommended sampling settings, kept with the model: `generation_defaults.json` at the root of its
folder (written by `latentforge export --steps/--guidance/--guidance-rescale`; diffusers ignores the file).

`SamplingSettings` is the one vocabulary of these settings: `latentforge generate`, `latentforge eval` and
`latentforge export` read and write it, and `pipeline_kwargs()` turns it into the pipeline's keywords, so
"the default settings" of a model mean one thing; models without the file get FALLBACK."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

FILE = "generation_defaults.json"


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """Denoising steps, classifier-free guidance scale and guidance rescale (the keys of the file)."""

    steps: int = 25  # num_inference_steps
    guidance_scale: float = 7.5  # >= 0; <= 1 turns guidance off
    guidance_rescale: float = 0.0  # in [0, 1]

    def updated(self, **given: Any) -> SamplingSettings:
        """These settings with every value of `given` that is not None (checked)."""
        given = check_defaults({k: v for k, v in given.items() if v is not None}, "sampling settings")
        return dataclasses.replace(self, **given)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The settings as pipeline call keywords (num_inference_steps, guidance_scale, guidance_rescale)."""
        return {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "guidance_rescale": self.guidance_rescale,
        }


FALLBACK = SamplingSettings()
_NAMES = tuple(f.name for f in dataclasses.fields(SamplingSettings))


def check_defaults(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` if every key is known and every value in range; ValueError naming `source` otherwise."""
    unknown = sorted(set(values) - set(_NAMES))
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(_NAMES)}")
    steps = values.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{source}: steps must be an integer >= 1, got {steps!r}")
    for name, low, high in (("guidance_scale", 0.0, float("inf")), ("guidance_rescale", 0.0, 1.0)):
        value = values.get(name, low)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{source}: {name} must be a number in [{low}, {high}], got {value!r}")
    return values


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
    """Write `settings` as the folder's generation_defaults.json."""
    path = Path(folder) / FILE
    values = check_defaults(dataclasses.asdict(settings), str(path))
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    return path
