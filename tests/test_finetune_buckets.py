"""Aspect-ratio buckets on real photographs (scikit-image's): whole non-square photos in their bucket, batches of
one shape in every process, the original size and crop in the cache, and a resumed run equal to a straight one."""

import dataclasses
import math

import datasets
import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from PIL import Image
from safetensors.torch import load_file

from latentforge.config_loader import load_config
from latentforge.data.buckets import AspectRatioBuckets, BucketSampler
from latentforge.data.data_config import DataConfig
from latentforge.data.sample_photos import write_photo_set
from latentforge.data.training_data import assign_buckets, load_splits, make_buckets
from latentforge.resources import config_file
from latentforge.training import unet as unet_trainer
from latentforge.training.latent_cache import load_or_build_cache, sample_inputs

pytest.importorskip("skimage")
BUCKETS = ["data.buckets=true", "data.bucket_reso_steps=8", "data.held_out_fraction=0"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_photo_set(folder)
    return folder


def _config(out, photos, *overrides):
    return load_config(
        unet_trainer.UNetTrainConfig,
        config_file("train", "smoke-unet"),
        [f"output_dir={out}", f"data.dataset={photos}", "optim.batch_size=2", *BUCKETS, *overrides],
    )


def test_each_photo_goes_whole_into_the_bucket_of_its_shape(photos):
    data = load_splits(DataConfig(dataset=str(photos), resolution=32, buckets=True, bucket_reso_steps=8))[0]
    sizes, ids = assign_buckets(data, DataConfig(resolution=32, buckets=True, bucket_reso_steps=8), 2)
    assert len(set(ids)) >= 3, "landscape, square and portrait photos share one bucket"
    for row, bucket in zip(data, ids):
        height, width = sizes[bucket]
        assert height * width <= 32 * 32 and height % 8 == 0 and width % 8 == 0
        image = row["image"]
        # the bucket's shape is within one step of the photo's, so the crop cuts a few pixels at most
        assert abs(width / height - image.width / image.height) < 0.4 * image.width / image.height
    with pytest.raises(ValueError, match="bucket_reso_steps"):
        assign_buckets(data, DataConfig(resolution=32, buckets=True, bucket_reso_steps=6), 2)


def test_bucketed_cache_batches_and_resume(photos, tmp_path):
    straight = unet_trainer.train(_config(tmp_path / "straight", photos, "optim.max_steps=4"))
    (folder,) = (tmp_path / "straight" / "cache").iterdir()
    tensors = load_file(folder / "cache.safetensors")
    n_buckets = len(tensors["sizes"])
    assert n_buckets >= 3 and tensors["original_size"].tolist()[0] != [32, 32]
    for b, (height, width) in enumerate(tensors["sizes"].tolist()):
        assert tensors[f"mean.{b}"].shape[-2:] == (height // 2, width // 2)  # the tiny VAE's factor 2
    # the crop of a whole photo in its bucket loses less than a square centre crop would
    sizes = tensors["original_size"].float()
    crops = tensors["crop_top_left"].float()
    resized_long = sizes.max(1).values * 32 / sizes.min(1).values
    assert (crops.max(1).values < 0.2 * resized_long).all(), crops

    # resume: 2 steps, stop, 2 more = 4 straight
    unet_trainer.train(_config(tmp_path / "resumed", photos, "optim.max_steps=2"))
    resumed = unet_trainer.train(
        _config(tmp_path / "resumed", photos, "optim.max_steps=4", "checkpoint.resume=latest")
    )
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert (tmp_path / "straight" / "validation" / "step-4.png").is_file()


def test_bucket_batches_are_one_shape_and_split_across_processes_without_overlap(photos, tmp_path):
    config = _config(tmp_path, photos)
    components = unet_trainer.load_components(config)
    data = load_splits(config.data)[0]
    cache = load_or_build_cache(
        Accelerator(cpu=True), components, data, config.data, tmp_path, False, "float32"
    )
    loader = cache.row_loader(2, seed=0)
    assert isinstance(loader.sampler, BucketSampler)
    shards = []
    for rank in range(2):
        shard = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)
        shard.set_epoch(1)
        shards.append([batch["index"] for batch in shard])
    for batches in shards:
        for idx in batches:
            latents, _, _ = sample_inputs(cache, idx, 1.0, 0.0)
            assert len(cache.bucket[idx].unique()) == 1 and latents.shape[0] == 2
    seen = [set(torch.cat(batches).tolist()) for batches in shards]
    assert not seen[0] & seen[1], "two processes trained on the same photo in one epoch"
    again = prepare_data_loader(loader, num_processes=2, process_index=0, put_on_device=False)
    again.set_epoch(1)
    assert [b["index"].tolist() for b in again] == [b.tolist() for b in shards[0]]
    with pytest.raises(ValueError, match="one bucket"):
        sample_inputs(cache, torch.tensor([0, int((cache.bucket != cache.bucket[0]).nonzero()[0])]), 1.0, 0.0)


@pytest.mark.parametrize("width, height, limit", [(40, 30, 1.0), (20, 20, 1.0), (20, 36, 2.0), (30, 30, 1.5)])
def test_small_photos_go_to_smaller_buckets_instead_of_being_blown_up(width, height, limit):
    buckets = AspectRatioBuckets(64, 8)
    unlimited = buckets.fit(width, height)
    assert max(unlimited[0] / width, unlimited[1] / height) > limit, "the case must need the limit"
    bucket_w, bucket_h = buckets.fit(width, height, limit)
    assert max(bucket_w / width, bucket_h / height) <= limit, "enlarged past data.max_upscale"
    assert bucket_w % 8 == 0 and bucket_h % 8 == 0
    # as large as the limit allows, give or take a step, and of about the photo's shape
    assert bucket_w * bucket_h >= 0.5 * width * height * limit**2
    assert abs(math.log(bucket_w / bucket_h) - math.log(width / height)) < 0.5
    assert buckets.fit(10 * width, 10 * height, limit) == buckets.fit(10 * width, 10 * height)


@pytest.mark.parametrize("width, height", [(40, 40), (50, 20)])
def test_a_photo_below_one_step_gets_the_smallest_bucket_not_the_full_resolution(width, height):
    # sqrt(w * h) * max_upscale < step: the smallest bucket (step x step) is the least enlargement there is
    assert AspectRatioBuckets(256, 64).fit(width, height, 1.0) == (64, 64)


def test_max_upscale_keeps_large_photos_and_groups_small_ones():
    sizes = [(320, 240), (40, 30), (41, 31), (240, 320)]
    data = datasets.Dataset.from_dict({"image": [Image.new("RGB", s) for s in sizes], "text": [""] * 4})
    config = DataConfig(resolution=64, buckets=True, bucket_reso_steps=8)
    plain_sizes, plain = assign_buckets(data, config, 8)
    limited_sizes, limited = assign_buckets(data, dataclasses.replace(config, max_upscale=1.0), 8)
    assert plain[1] == plain[0] and limited[1] == limited[2] != limited[0], "small photos not apart"
    height, width = limited_sizes[limited[1]]
    assert width <= 40 and height <= 30
    assert [plain_sizes[i] for i in (plain[0], plain[3])] == [
        limited_sizes[i] for i in (limited[0], limited[3])
    ]
    with pytest.raises(ValueError, match="max_upscale must be 0"):
        make_buckets(dataclasses.replace(config, max_upscale=0.5))
    with pytest.raises(ValueError, match="needs data.buckets=true"):
        make_buckets(dataclasses.replace(config, max_upscale=1.0, buckets=False))
