"""Where a run's scalars, config and images go (`report_to`), through accelerate's trackers: TensorBoard
(default, under logs/), Weights & Biases (offline unless WANDB_MODE or WANDB_API_KEY says otherwise, so it
works without a network and `wandb sync` uploads later), both ("all") or none."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from accelerate import Accelerator

REPORT_TO = {"tensorboard": ["tensorboard"], "wandb": ["wandb"], "all": ["tensorboard", "wandb"], "none": []}
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def trackers_of(report_to: str) -> list[str]:
    """accelerate's `log_with` names for `report_to`; raises naming the missing package or the allowed names."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to must be one of {sorted(REPORT_TO)}, got {report_to!r}")
    names = REPORT_TO[report_to]
    for name in names:
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ValueError(
                f"report_to={report_to} needs the {name} package: pip install {name} (or report_to=none)"
            )
    return names


def init_kwargs(names: list[str], logs: Path) -> dict[str, dict]:
    """Per-tracker keyword arguments of `init_trackers`: wandb writes under logs/ and runs offline unless the
    environment asks for online mode (WANDB_MODE) or holds a key (WANDB_API_KEY)."""
    if "wandb" not in names:
        return {}
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    return {"wandb": {"dir": str(logs), "mode": mode}}


def log_images(accelerator: Accelerator, name: str, images: list, step: int, captions: list[str]) -> None:
    """PIL `images` of one size to every tracker of the run (TensorBoard as one NHWC batch, wandb with
    captions)."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            batch = np.stack([np.asarray(image) for image in images])
            tracker.writer.add_images(name, batch, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.run.log(
                {name: [wandb.Image(image, caption=c) for image, c in zip(images, captions)]}, step=step
            )
