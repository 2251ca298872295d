"""DreamBooth-LoRA on four views of one real cat (scikit-image's `chelsea`) from the shipped default model: the
instance prompt moves toward the cat, and prior preservation keeps the class prompt's images near the base
model's, where without it they drift. Class images are generated once, resumably, image i from seed + i."""

import errno
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image

from latentforge.config_loader import load_config
from latentforge.data.sample_photos import write_cat_views
from latentforge.models.components import Components
from latentforge.pipelines import TextToImagePipeline
from latentforge.resources import DEFAULT_MODEL, config_file
from latentforge.training import unet as unet_trainer
from latentforge.training.dreambooth import generate_class_images
from latentforge.training.stage_configs import DreamBoothConfig

pytest.importorskip("skimage")
SEEDS = (100, 101, 102, 103)
# 60 steps keep this under a minute; configs/train/small-dreambooth-lora.yaml trains 200
QUICK = [
    "optim.max_steps=60",
    "optim.learning_rate=1e-3",
    "lora.text_encoder=false",
    "dreambooth.num_class_images=4",
    "dreambooth.class_inference_steps=10",
    "checkpoint.every_steps=0",
    "validation.prompts=[]",
]


def _histogram(image: Image.Image) -> np.ndarray:
    """Joint RGB histogram, 8 bins per channel, of the image at 64x64 (sums to 1)."""
    rgb = (np.asarray(image.convert("RGB").resize((64, 64))) // 32).reshape(-1, 3)
    counts = np.bincount(rgb[:, 0] * 64 + rgb[:, 1] * 8 + rgb[:, 2], minlength=512).astype(float)
    return counts / counts.sum()


def _generate(components: Components, prompt: str) -> list[Image.Image]:
    pipe = TextToImagePipeline.from_components(components)
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(s) for s in SEEDS]
    result = pipe([prompt] * len(SEEDS), num_inference_steps=15, generator=generators, height=48, width=80)
    return result.images


def _with_lora(lora_dir) -> Components:
    components = Components.from_pretrained(DEFAULT_MODEL)
    TextToImagePipeline.from_components(components).load_lora_weights(
        lora_dir / "pytorch_lora_weights.safetensors"
    )
    return components


def test_dreambooth_moves_toward_the_subject_and_prior_preservation_keeps_the_class(tmp_path):
    photos = write_cat_views(tmp_path / "cat")
    subject = np.mean([_histogram(Image.open(p)) for p in photos], 0)

    def to_subject(images):  # total-variation distance of colour histograms, 0 = the cat's colours
        return float(np.mean([0.5 * np.abs(_histogram(im) - subject).sum() for im in images]))

    def drift(images, reference):  # mean absolute pixel difference per seed, in [0, 1]
        return float(
            np.mean(
                [
                    np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() / 255
                    for a, b in zip(images, reference)
                ]
            )
        )

    base = Components.from_pretrained(DEFAULT_MODEL)
    base_instance, base_class = _generate(base, "a photo of sks cat"), _generate(base, "a photo of a cat")
    measured = {}
    for name, extra in (("prior", []), ("no_prior", ["dreambooth.prior_loss_weight=0"])):
        config = load_config(
            unet_trainer.UNetTrainConfig,
            config_file("train", "small-dreambooth-lora"),
            [f"output_dir={tmp_path / name}", f"dreambooth.instance_data={tmp_path / 'cat'}", *QUICK, *extra],
        )
        tuned = _with_lora(unet_trainer.train(config))
        instance, classes = _generate(tuned, "a photo of sks cat"), _generate(tuned, "a photo of a cat")
        measured[name] = {"to_subject": to_subject(instance), "class_drift": drift(classes, base_class)}
    print("base to_subject", to_subject(base_instance), measured)
    # measured on 2 CPU cores with the default model: base 0.993; prior 0.867 (class drift 0.123); no prior
    # 0.814 (class drift 0.206): prior preservation keeps the class 40% nearer the base model's and still
    # moves the instance prompt toward the subject. (The previous default models: base 1.000, prior 0.997
    # (drift 0.022), no prior 0.846 (drift 0.585), their text encoder putting "a photo of sks cat" and "a
    # photo of a cat" at cosine 0.987, so the prior traded almost all of the move for the class; before that
    # base 0.984, prior 0.962, no prior 0.842.) Without training the distance is exactly the base's, so any
    # drop is the training's.
    assert measured["no_prior"]["to_subject"] < to_subject(base_instance) - 0.05, measured
    assert measured["prior"]["to_subject"] <= to_subject(base_instance), measured
    assert measured["prior"]["class_drift"] < 0.75 * measured["no_prior"]["class_drift"], measured
    assert len(list((tmp_path / "prior" / "class_images").glob("class-*.png"))) == 4
    assert not (tmp_path / "no_prior" / "class_images").exists(), "no class images without prior preservation"


def test_class_images_are_generated_once_and_a_stopped_generation_makes_only_the_missing_ones(tmp_path):
    components = Components.from_architecture("tiny", seed=0)
    db = DreamBoothConfig(
        instance_data="x", class_prompt="a red circle", num_class_images=3, class_inference_steps=2
    )
    accelerator = Accelerator(cpu=True)
    assert generate_class_images(accelerator, components, db, 16, tmp_path / "full", seed=5) == 3
    partial = tmp_path / "partial"
    partial.mkdir()
    Image.open(tmp_path / "full" / "class-00001.png").save(partial / "class-00001.png")
    assert generate_class_images(accelerator, components, db, 16, partial, seed=5) == 2
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / "full" / f"class-{i:05d}.png"))
        b = np.asarray(Image.open(partial / f"class-{i:05d}.png"))
        assert np.array_equal(a, b), f"class image {i} depends on where generation stopped"
    assert generate_class_images(accelerator, components, db, 16, partial, seed=5) == 0  # reused as they are
    with pytest.raises(ValueError, match="dreambooth.instance_prompt"):
        unet_trainer.check_config(
            load_config(unet_trainer.UNetTrainConfig, None, [f"dreambooth.instance_data={tmp_path / 'full'}"])
        )


def test_a_full_disk_while_writing_class_images_leaves_no_partial_one(tmp_path, monkeypatch):
    components = Components.from_architecture("tiny", seed=0)
    db = DreamBoothConfig(
        instance_data="x", class_prompt="a red circle", num_class_images=3, class_inference_steps=2
    )
    accelerator, folder, save = Accelerator(cpu=True), tmp_path / "class", Image.Image.save

    def full_at_the_second(image, fp, *args, **kwargs):
        if "class-00001" in str(fp):
            Path(fp).write_bytes(b"\x89PNG cut short")  # what got written before the disk filled
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_at_the_second)
    with pytest.raises(OSError, match=r"could not write .*class-00001.png \(No space left on device\)"):
        generate_class_images(accelerator, components, db, 16, folder, seed=5)
    assert sorted(p.name for p in folder.iterdir()) == ["class-00000.png"], "a partial image was left"
    monkeypatch.setattr(Image.Image, "save", save)
    assert generate_class_images(accelerator, components, db, 16, folder, seed=5) == 2  # the missing ones
