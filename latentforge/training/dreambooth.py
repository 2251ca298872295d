"""DreamBooth (Ruiz et al. 2023): fine-tune on a few photos of one subject, all captioned with a prompt that
holds a rare token ("a photo of sks cat"), with prior preservation (their section 3.3): class images the base
model makes for the class prompt ("a photo of a cat") train alongside, weighted by `prior_loss_weight`, so
the class keeps looking as it did. As diffusers' `train_dreambooth.py` and kohya's regularisation images.

The class images are generated once, by the base model through our own pipeline, image i from seed + i, and
written one by one into the class folder: a stopped run makes only the missing ones, a folder that already
holds enough is used as it is (your own class photos too)."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from latentforge.atomic_files import staged_file
from latentforge.data.sources import image_files, prompt_folder_dataset
from latentforge.training.all_processes import run_together
from latentforge.training.run_dir import RunDir
from latentforge.training.stage_configs import DreamBoothConfig


def uses_prior(db: DreamBoothConfig) -> bool:
    """True when class images train alongside the instance photos."""
    return bool(db.instance_data and db.class_prompt and db.prior_loss_weight > 0)


def check_dreambooth(db: DreamBoothConfig) -> None:
    """Settings that cannot work, before anything is loaded."""
    if not db.instance_data:
        if db.instance_prompt or db.class_prompt:
            raise ValueError(
                "dreambooth: a prompt is set but dreambooth.instance_data (the photos' folder) is not"
            )
        return
    if not db.instance_prompt:
        raise ValueError(
            'dreambooth.instance_data needs dreambooth.instance_prompt, e.g. "a photo of sks cat"'
        )
    if not image_files(db.instance_data):
        raise ValueError(f"dreambooth.instance_data={db.instance_data}: no images (.png, .jpg, ...) in it")
    if db.prior_loss_weight < 0:
        raise ValueError(f"dreambooth.prior_loss_weight must be >= 0, got {db.prior_loss_weight}")
    if uses_prior(db) and db.num_class_images < 1:
        raise ValueError(
            f"dreambooth.num_class_images must be >= 1 with a class_prompt, got {db.num_class_images}"
        )


def class_folder(db: DreamBoothConfig, run_dir: RunDir) -> Path:
    return Path(db.class_data).expanduser() if db.class_data else run_dir.root / "class_images"


@torch.no_grad()
def generate_class_images(
    accelerator: Accelerator, components, db: DreamBoothConfig, size: int, folder: Path, seed: int
) -> int:
    """Make the class images `folder` lacks (up to num_class_images) with the base model, on the main process;
    image i is `class-<i>.png` from seed + i, written whole or not at all. Returns how many were made."""
    have = len(image_files(folder)) if folder.is_dir() else 0
    todo = [i for i in range(db.num_class_images) if not (folder / f"class-{i:05d}.png").exists()]
    todo = todo[: max(0, db.num_class_images - have)]

    def generate() -> None:  # the main process; the others wait, and stop with it when it fails
        if accelerator.is_main_process and todo:
            _generate(components, db, size, folder, seed, todo)

    what = f"class images to {folder}"
    run_together(accelerator, generate, what, lambda: "the class images written before are kept")
    return len(todo)


def _generate(components, db: DreamBoothConfig, size: int, folder: Path, seed: int, todo: list[int]) -> None:
    """Class images number `todo` into `folder`, image i from seed + i, each file whole or absent."""
    from latentforge.pipelines import TextToImagePipeline

    folder.mkdir(parents=True, exist_ok=True)
    pipe = TextToImagePipeline.from_components(components)
    pipe.set_progress_bar_config(disable=True)
    for start in tqdm(range(0, len(todo), 4), desc="class images", unit="batch"):
        chunk = todo[start : start + 4]
        with torch.random.fork_rng(devices=[]):  # training randomness must not depend on this
            images = pipe(
                prompt=[db.class_prompt] * len(chunk),
                num_inference_steps=db.class_inference_steps,
                guidance_scale=db.class_guidance_scale,
                generator=[torch.Generator().manual_seed(seed + i) for i in chunk],
                height=size,
                width=size,
            ).images
        for i, image in zip(chunk, images):
            with staged_file(folder / f"class-{i:05d}.png") as tmp:
                image.save(tmp, format="PNG")


def dreambooth_images(accelerator: Accelerator, components, config, run_dir: RunDir):
    """(dataset, n_instance): the instance photos captioned instance_prompt, then (prior preservation) the
    class images captioned class_prompt, generated first where missing."""
    import datasets

    db = config.dreambooth
    instance = prompt_folder_dataset(db.instance_data, db.instance_prompt)
    if not uses_prior(db):
        return instance, len(instance)
    folder = class_folder(db, run_dir)
    made = generate_class_images(accelerator, components, db, config.data.resolution, folder, config.seed)
    if made:
        accelerator.print(f"generated {made} class image(s) for {db.class_prompt!r} in {folder}")
    classes = prompt_folder_dataset(folder, db.class_prompt, limit=db.num_class_images)
    return datasets.concatenate_datasets([instance, classes]), len(instance)


def draw_class_rows(bucket: torch.Tensor, class_rows: torch.Tensor, n: int) -> torch.Tensor:
    """`n` cache rows of class images, all of one bucket (that of a random class row), drawn with replacement
    from the global RNG (which checkpoints restore). bucket: (N,) bucket of every cache row."""
    first = class_rows[torch.randint(len(class_rows), ())]
    same = class_rows[bucket[class_rows] == bucket[first]]
    return same[torch.randint(len(same), (n,))]
