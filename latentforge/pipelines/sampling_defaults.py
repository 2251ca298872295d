"""A model's recommended sampling settings, kept with the model: `generation_defaults.json` at the root of its
folder (written by `latentforge export --steps/--guidance/--guidance-rescale`; diffusers ignores the file).
`latentforge generate` and `latentforge eval` use them for every setting not given, so "the default
settings" of a model mean one thing; models without the file get FALLBACK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILE = "generation_defaults.json"
FALLBACK: dict[str, Any] = {"steps": 25, "guidance_scale": 7.5, "guidance_rescale": 0.0}


def check_defaults(values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` if every key is known and every value in range; ValueError naming `source` otherwise."""
    unknown = sorted(set(values) - set(FALLBACK))
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(FALLBACK)}")
    steps = values.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{source}: steps must be an integer >= 1, got {steps!r}")
    for name, low, high in (("guidance_scale", 0.0, float("inf")), ("guidance_rescale", 0.0, 1.0)):
        value = values.get(name, low)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{source}: {name} must be a number in [{low}, {high}], got {value!r}")
    return values


def read_defaults(model: str | Path) -> dict[str, Any]:
    """FALLBACK updated with the model folder's generation_defaults.json (if it is a local folder with one)."""
    path = Path(model) / FILE
    if not path.is_file():
        return dict(FALLBACK)
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object like {json.dumps(FALLBACK)}")
    return {**FALLBACK, **check_defaults(values, str(path))}


def pipeline_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """The settings of `read_defaults` as pipeline call keywords (num_inference_steps, guidance_scale, ...)."""
    return {
        "num_inference_steps": values["steps"],
        "guidance_scale": values["guidance_scale"],
        "guidance_rescale": values["guidance_rescale"],
    }


def write_defaults(folder: str | Path, values: dict[str, Any]) -> Path:
    """Write `values` (checked) as the folder's generation_defaults.json."""
    path = Path(folder) / FILE
    path.write_text(json.dumps(check_defaults(values, str(path)), indent=2, sort_keys=True) + "\n")
    return path
