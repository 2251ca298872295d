"""Tests of the image/caption transform (crop, caption-aware flip) and aspect-ratio buckets."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from latentforge.data.buckets import AspectRatioBuckets, BucketBatchSampler
from latentforge.data.transforms import ImageCaptionTransform, swap_left_right


def _left_red_right_blue(width=40, height=20):
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a red circle to the left of a blue square", "a red circle to the right of a blue square"),
        ("Left hand, RIGHT foot; left-handed", "Right hand, LEFT foot; right-handed"),
        ("leftover bright copyright", "leftover bright copyright"),
        ("on the right.", "on the left."),
    ],
)
def test_swap_left_right(caption, expected):
    assert swap_left_right(caption) == expected
    assert swap_left_right(expected) == caption


def test_transform_range_shape_and_centre_crop():
    pixels, caption = ImageCaptionTransform(16)(_left_red_right_blue(), "x", random.Random(0))
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.float32 and caption == "x"
    assert pixels[:, 8, 0].tolist() == [1.0, -1.0, -1.0] and pixels[:, 8, 15].tolist() == [-1.0, -1.0, 1.0]
    wide, _ = ImageCaptionTransform(16)(_left_red_right_blue(), "x", random.Random(0), size=(8, 16))
    assert wide.shape == (3, 8, 16)
    with pytest.raises(ValueError, match="flip_mode"):
        ImageCaptionTransform(16, flip_mode="maybe")
    with pytest.raises(ValueError, match="rng"):
        ImageCaptionTransform(16, center_crop=False)(_left_red_right_blue(), "x", 3)


@pytest.mark.parametrize(
    "rng_factory", [random.Random, np.random.default_rng, lambda s: torch.Generator().manual_seed(s)]
)
def test_flip_swaps_caption_with_the_image(rng_factory):
    transform = ImageCaptionTransform(20, random_flip=True)
    flipped = 0
    for seed in range(40):
        pixels, caption = transform(_left_red_right_blue(20, 20), "red on the left", rng_factory(seed))
        red_left = pixels[0, 10, 0] > 0
        assert caption == ("red on the left" if red_left else "red on the right")
        flipped += not red_left
    assert 5 < flipped < 35
    # same generator state -> same decision
    assert torch.equal(
        transform(_left_red_right_blue(), "a", rng_factory(3))[0],
        transform(_left_red_right_blue(), "a", rng_factory(3))[0],
    )


def test_flip_skip_mode_never_flips_sided_captions():
    transform = ImageCaptionTransform(20, random_flip=True, flip_mode="skip")
    for seed in range(20):
        pixels, caption = transform(_left_red_right_blue(20, 20), "red on the left", random.Random(seed))
        assert pixels[0, 10, 0] > 0 and caption == "red on the left"
    flips = [
        transform(_left_red_right_blue(20, 20), "a cat", random.Random(s))[0][0, 10, 0] < 0 for s in range(20)
    ]
    assert any(flips) and not all(flips)


def test_random_crop_is_seeded():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    transform = ImageCaptionTransform(32, center_crop=False)
    crops = [transform(image, "", random.Random(s))[0] for s in range(4)]
    assert torch.equal(crops[0], transform(image, "", random.Random(0))[0])
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_bucket_resolutions():
    buckets = AspectRatioBuckets(512, step=64)
    assert (512, 512) in buckets.buckets and (768, 320) in buckets.buckets and (320, 768) in buckets.buckets
    for w, h in buckets.buckets:
        assert w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 and min(w, h) >= 256 and max(w, h) <= 1024
    assert buckets.buckets[buckets.assign(1000, 1000)] == (512, 512)
    assert buckets.buckets[buckets.assign(1600, 900)] == (640, 384)  # 16:9 -> nearest ratio 1.67
    w, h = buckets.buckets[buckets.assign(300, 900)]
    assert h > w
    with pytest.raises(ValueError, match="multiples of step"):
        AspectRatioBuckets(500, step=64)


def test_bucket_batch_sampler_is_seeded_epoch_aware_and_pure():
    ids = [0, 1, 0, 1, 2, 0, 0, 1, 2, 0, 1]
    sampler = BucketBatchSampler(ids, batch_size=2, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 6  # buckets of 5, 4 and 2 items
    assert sorted(i for batch in first for i in batch) == list(range(len(ids)))
    assert all(len({ids[i] for i in batch}) == 1 for batch in first)
    assert first == list(BucketBatchSampler(ids, batch_size=2, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != first
    dropping = BucketBatchSampler(ids, batch_size=2, seed=3, drop_last=True)
    assert len(dropping) == len(list(dropping)) == 5 and all(len(b) == 2 for b in dropping)
