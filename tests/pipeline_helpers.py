"""Shared pieces of the pipeline tests: tiny random models, diffusers reference pipelines, inputs.

The tiny architectures (`configs/models/tiny`, `tiny-inpaint`) make 32x32 images from 16x16x4 latents.
Tests run torch with one intra-op thread: on the shared 2-core machines two OpenMP threads that wait for
each other at every op make the tiny models ten times slower.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from latentforge.models.components import Components

SIZE = 32  # pixels of the tiny architectures
PROMPT = "a red circle to the left of a blue square"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def _cached(name: str, seed: int) -> Components:
    components = Components.from_architecture(name, seed=seed)
    components.unet.eval()
    return components


def tiny(
    name: str = "tiny", prediction_type: str = "epsilon", seed: int = 0, fresh: bool = False
) -> Components:
    """Tiny random components; cached and shared unless `fresh` (use fresh ones for tests that change modules)."""
    components = Components.from_architecture(name, seed=seed) if fresh else _cached(name, seed)
    scheduler = type(components.scheduler).from_config(
        components.scheduler.config, prediction_type=prediction_type
    )
    return dataclasses.replace(components, scheduler=scheduler)


def reference(diffusers_cls, components: Components, scheduler=None):
    """A diffusers pipeline over the same modules (and a copy of `scheduler`)."""
    pipe = diffusers_cls(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=type(scheduler or components.scheduler).from_config(
            (scheduler or components.scheduler).config
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def quiet(pipe):
    """`pipe` with its progress bar off."""
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_image(seed: int = 0, size: int = SIZE) -> PIL.Image.Image:
    """A smooth random RGB image (noise upsampled), like a photo rather than white noise."""
    rng = np.random.default_rng(seed)
    small = PIL.Image.fromarray(rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8))
    return small.resize((size, size), PIL.Image.BICUBIC)


def box_mask(size: int = SIZE, box: tuple[int, int, int, int] = (8, 6, 22, 20)) -> PIL.Image.Image:
    """Black mask with a white (repaint) rectangle x0, y0, x1, y1."""
    mask = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return PIL.Image.fromarray(mask)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


class CallCounter:
    """Counts forward calls of a module and records the batch size of each."""

    def __init__(self, module: torch.nn.Module):
        self.batches: list[int] = []
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.batches.append(args[0].shape[0])

    def remove(self) -> None:
        self._handle.remove()


def train_tiny_lora(tmp_path, *overrides: str):
    """Train configs/train/smoke-lora on a saved tiny base model in `tmp_path`; returns (base, lora folder)."""
    from latentforge.config_loader import load_config
    from latentforge.resources import config_file
    from latentforge.training import unet as unet_trainer

    base = tmp_path / "base"
    Components.from_architecture("tiny", seed=0).save_pretrained(base)
    extra = [f"output_dir={tmp_path / 'run'}", f"base={base}", *overrides]
    config = load_config(unet_trainer.UNetTrainConfig, config_file("train", "smoke-lora"), extra)
    return base, unet_trainer.train(config)


class ModelRan(AssertionError):
    """A network ran although the input should have been refused before it."""


@contextlib.contextmanager
def guarded_pipelines(networks: tuple[str, ...] = ("unet", "vae", "text_encoder")):
    """{task: pipeline} over tiny components whose `networks` raise ModelRan if they run (checks that bad
    input is refused before any work)."""
    from latentforge import ImageToImagePipeline, InpaintPipeline, TextToImagePipeline

    components = tiny()

    def forbid(module, args):
        raise ModelRan(f"{type(module).__name__} ran before the bad input was reported")

    handles = [getattr(components, name).register_forward_pre_hook(forbid) for name in networks]
    classes = {"txt2img": TextToImagePipeline, "img2img": ImageToImagePipeline, "inpaint": InpaintPipeline}
    try:
        yield {task: cls.from_components(components) for task, cls in classes.items()}
    finally:
        for handle in handles:
            handle.remove()


def benchmark_script(name: str):
    """benchmarks/`name`.py loaded as a module (the benchmark scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
