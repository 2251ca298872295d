"""Evaluation reports: every run is written as `<name>.json`, `<name>.md` (Markdown tables) and
`<name>.png` (an image grid), side by side in one output folder. Existing files are never replaced
unless `overwrite=True`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from latentforge.imaging import make_grid

SUFFIXES = (".json", ".md", ".png")
MAX_GRID_IMAGES = 64
GRID_BORDER = 2  # px of frame around each image of a report's grid
_MARK_COLORS = {True: (40, 170, 60), False: (210, 40, 40)}  # grid border: correct / wrong


@dataclass
class Metric:
    """One reported number; `note` says what it was measured on (feature space, image set, model)."""

    name: str
    value: float | str | None
    note: str = ""


@dataclass
class Report:
    """A titled list of metrics, optional per-item rows, and images for the grid (row-major)."""

    name: str
    title: str
    metrics: list[Metric]
    rows: list[dict[str, Any]] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    marks: list[bool | None] = field(default_factory=list)  # grid border per image: pass / fail / none
    settings: dict[str, Any] = field(default_factory=dict)
    grid_caption: str = "row by row, in the order of the # column"

    def paths(self, out_dir: str | os.PathLike) -> list[Path]:
        """The files this report writes into `out_dir`."""
        return [Path(out_dir) / f"{self.name}{suffix}" for suffix in SUFFIXES]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe content: title, settings, metrics, rows."""
        return {
            "title": self.title,
            "settings": self.settings,
            "metrics": [m.__dict__ for m in self.metrics],
            "rows": self.rows,
        }

    def to_markdown(self) -> str:
        """A Markdown document: the metrics table, then the settings, then the rows (if any)."""
        lines = [f"# {self.title}", "", "| metric | value | measured on |", "|---|---|---|"]
        lines += [f"| {m.name} | {_format(m.value)} | {m.note} |" for m in self.metrics]
        if self.settings:
            lines += ["", "Settings: " + ", ".join(f"`{k}={v}`" for k, v in self.settings.items())]
        if self.rows:
            columns = list(self.rows[0])
            lines += ["", f"| # | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
            for i, row in enumerate(self.rows):
                lines.append(f"| {i} | " + " | ".join(_format(row.get(c)) for c in columns) + " |")
        if self.images:
            shown = min(len(self.images), MAX_GRID_IMAGES)
            lines += [
                "",
                f"![grid]({self.name}.png)",
                "",
                f"Grid: first {shown} images, {self.grid_caption}.",
            ]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike, overwrite: bool = False) -> list[Path]:
        """Write JSON, Markdown and PNG grid into `out_dir`; FileExistsError if one exists and not `overwrite`."""
        check_writable(out_dir, self.name, overwrite)
        json_path, md_path, png_path = self.paths(out_dir)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_finite(self.to_dict()), indent=2, default=_json_default, allow_nan=False)
        json_path.write_text(text + "\n")
        md_path.write_text(self.to_markdown())
        image_grid(self.images[:MAX_GRID_IMAGES], self.marks[:MAX_GRID_IMAGES]).save(png_path)
        return [json_path, md_path, png_path]


def check_writable(out_dir: str | os.PathLike, name: str, overwrite: bool = False) -> None:
    """FileExistsError naming the files when a report `name` already exists in `out_dir` (and not `overwrite`);
    call it before the heavy work starts."""
    existing = [p for p in (Path(out_dir) / f"{name}{s}" for s in SUFFIXES) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(map(str, existing))} already exist; pass --overwrite (overwrite=True) to replace them"
        )


def image_grid(
    images: Sequence[Image.Image], marks: Sequence[bool | None] = (), border: int = GRID_BORDER
) -> Image.Image:
    """Images in a near-square grid (row-major), each framed green (True), red (False) or grey (None)."""
    if not images:
        return Image.new("RGB", (1, 1), "white")
    side = max(max(im.size) for im in images)
    framed = []
    for i, image in enumerate(images):
        mark = marks[i] if i < len(marks) else None
        fitted = ImageOps.pad(image.convert("RGB"), (side, side), color="white")
        framed.append(ImageOps.expand(fitted, border, fill=_MARK_COLORS.get(mark, (200, 200, 200))))
    return make_grid(framed, fill="white")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if value is None:
        return "unavailable"
    return str(value).replace("|", "\\|")


def _finite(value: Any) -> Any:
    """Strict JSON has no NaN/Infinity: write those floats as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)
