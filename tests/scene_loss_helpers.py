"""Shared pieces of the tests of the U-Net trainer's losses on the shapes data's scenes (tests/test_shape_maps.py,
tests/test_token_grounding.py): the smoke config with overrides, a refusal before any work, a short run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from latentforge.config_loader import load_config
from latentforge.resources import config_file
from latentforge.training import unet as unet_trainer


def smoke_config(out: Path, *overrides: str) -> unet_trainer.UNetTrainConfig:
    return load_config(
        unet_trainer.UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={out}", *overrides]
    )


def assert_refused_before_work(out: Path, match: str, *overrides: str) -> None:
    with pytest.raises(ValueError, match=match):
        unet_trainer.train(smoke_config(out, *overrides))
    assert not (out / "cache").exists(), "the error must come before any work"


def train_weights(out: Path, *overrides: str) -> dict[str, torch.Tensor]:
    """Train the smoke U-Net with `overrides`; its exported U-Net's weights."""
    unet_trainer.train(smoke_config(out, *overrides))
    return load_file(out / "model" / "unet" / "diffusion_pytorch_model.safetensors")
