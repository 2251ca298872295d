"""Samplers by name: each name is a diffusers scheduler class plus the settings that make the variant.

A scheduler is always built with `from_config` of the model's own scheduler config, so the model's noise
schedule (betas, number of training steps, prediction type, timestep spacing) carries over and only the
sampling algorithm changes. This module imports no torch or diffusers at import time, so the CLI can list
the names cheaply.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any


@dataclasses.dataclass(frozen=True)
class SchedulerSpec:
    """A diffusers scheduler class name, the config overrides of the variant, and A1111's sampler name."""

    class_name: str
    overrides: dict[str, Any]
    a1111_name: str


SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddpm": SchedulerSpec("DDPMScheduler", {}, "DDPM"),
    "ddim": SchedulerSpec("DDIMScheduler", {}, "DDIM"),
    # PLMS without the Runge-Kutta warm-up steps, as Stable Diffusion ships it.
    "pndm": SchedulerSpec("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "lms": SchedulerSpec("LMSDiscreteScheduler", {"use_karras_sigmas": False}, "LMS"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", {"use_karras_sigmas": False}, "Heun"),
    "euler": SchedulerSpec("EulerDiscreteScheduler", {"use_karras_sigmas": False}, "Euler"),
    "euler-a": SchedulerSpec("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    # DPM-Solver++ (Lu et al. 2022), second order, multistep; Karras et al. 2022 sigmas for "-karras".
    "dpmpp-2m": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        "DPM++ 2M",
    ),
    "dpmpp-2m-karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    "dpmpp-2m-sde": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        "DPM++ 2M SDE",
    ),
    # UniPC (Zhao et al. 2023), bh2 variant, diffusers' defaults.
    "unipc": SchedulerSpec("UniPCMultistepScheduler", {"use_karras_sigmas": False}, "UniPC"),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)


def check_scheduler_name(name: str) -> SchedulerSpec:
    """The spec of `name`; ValueError listing the known names otherwise."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler: unknown name {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    return SCHEDULERS[name]


def make_scheduler(name: str, base_config: Any) -> Any:
    """A new scheduler `name` built from `base_config` (the model's scheduler config) plus the variant's settings.

    Warns when the variant does not suit the model's schedule: Karras sigmas on a zero-terminal-SNR schedule
    start at the rescaled last step (sigma ~4096) and spend about a third of the steps where every seed gives
    the same image (Lin et al. 2024 and our own measurement), which shows as a noisy, textured result."""
    import diffusers

    spec = check_scheduler_name(name)
    if spec.overrides.get("use_karras_sigmas") and base_config.get("rescale_betas_zero_snr"):
        warnings.warn(
            f"scheduler {name!r}: Karras sigmas do not suit this model's zero-terminal-SNR schedule "
            "(rescale_betas_zero_snr); expect noisy, textured images. Use the same sampler without Karras "
            f"sigmas ({name.removesuffix('-karras')}) or the model's own scheduler",
            UserWarning,
            stacklevel=2,
        )
    scheduler_cls = getattr(diffusers, spec.class_name)
    return scheduler_cls.from_config(base_config, **spec.overrides)
