"""README.md beside an export: what it is, the data, the measured numbers and the run's full config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_model_card(
    folder: Path, title: str, config_file: Path, data_note: str, metrics: dict[str, Any]
) -> None:
    """`folder/README.md`; `config_file` is the run's config.yaml (written by `save_config` at the start)."""
    lines = [
        "---",
        "library_name: diffusers",
        "tags: [latentforge, text-to-image]",
        "---",
        f"# {title}",
        "",
        "Trained with latentforge. Reproduce with the config below (`latentforge train ... --config config.yaml`).",
        "",
        "## Data",
        "",
        data_note,
        "",
        "## Results",
        "",
        "```json",
        json.dumps(metrics, indent=2, default=str),
        "```",
        "",
        "## Config",
        "",
        "```yaml",
        config_file.read_text().rstrip(),
        "```",
        "",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text("\n".join(lines))
