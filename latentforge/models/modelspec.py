"""Stability AI's model-spec header keys (`modelspec.*`, github.com/Stability-AI/ModelSpec), which kohya's
sd-scripts write into checkpoints and LoRAs: they say what the keys cannot (prediction type, resolution)."""

from __future__ import annotations

import datetime


def modelspec(v2: bool, prediction_type: str, pixels: int, title: str, adapter: str = "") -> dict[str, str]:
    """The keys for an SD 1.x/2.x model, or for an adapter of one (`adapter="lora"`)."""
    v_prediction = prediction_type == "v_prediction"
    if v2:
        architecture = "stable-diffusion-v2-768-v" if v_prediction else "stable-diffusion-v2-512"
    else:
        architecture = "stable-diffusion-v1"
    return {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/{adapter}" if adapter else architecture,
        # as kohya: SD 1.x/2.x LoRAs use diffusers' module names, checkpoints the original implementation's
        "modelspec.implementation": "diffusers"
        if adapter
        else "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        "modelspec.resolution": f"{pixels}x{pixels}",
        "modelspec.prediction_type": "v" if v_prediction else "epsilon",
        "modelspec.date": datetime.date.today().isoformat(),
    }
