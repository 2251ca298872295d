"""Aspect-ratio buckets (as in kohya-ss sd-scripts / NovelAI's "aspect ratio bucketing").

Images are trained at the bucket resolution (width, height) whose aspect ratio is nearest to theirs,
with area <= resolution^2 and sides divisible by `step` (which must be divisible by the VAE factor),
and every batch holds one bucket only, so images are cropped far less than with square training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
from torch.utils.data import Sampler


class AspectRatioBuckets:
    """Bucket resolutions (width, height) for a target `resolution`; `assign` maps an image size to one."""

    def __init__(
        self, resolution: int, step: int = 64, min_side: int | None = None, max_side: int | None = None
    ):
        min_side = min_side or max(step, resolution // 2)
        max_side = max_side or resolution * 2
        if step < 1 or resolution % step or min_side % step or max_side % step:
            raise ValueError(
                f"resolution ({resolution}), min_side ({min_side}) and max_side ({max_side}) must be multiples of step ({step})"
            )
        if not min_side <= resolution <= max_side:
            raise ValueError(
                f"need min_side <= resolution <= max_side, got {min_side}, {resolution}, {max_side}"
            )
        sizes = set()
        for width in range(min_side, max_side + 1, step):
            # the tallest height (multiple of step) that keeps area <= resolution^2
            height = min(max_side, (resolution * resolution // width) // step * step)
            if height >= min_side:
                sizes.update({(width, height), (height, width)})
        self.resolution, self.step = resolution, step
        self.buckets: list[tuple[int, int]] = sorted(sizes, key=lambda wh: (wh[0] / wh[1], wh[0]))
        self._log_ratios = np.log([w / h for w, h in self.buckets])

    def __len__(self) -> int:
        return len(self.buckets)

    def fit(self, width: int, height: int, max_upscale: float = 0.0) -> tuple[int, int]:
        """(width, height) of the bucket an image of that size is resized to cover: the nearest in aspect ratio
        (`assign`); with max_upscale > 0, when covering it would enlarge the image more than max_upscale times,
        the nearest-aspect bucket of the largest smaller area (side resolution - k * step) that does not, so a
        small photo trains at about its own size (kohya's bucket_no_upscale is max_upscale=1). Buckets of every
        smaller area share the same grid, so small photos of like sizes share buckets."""
        bucket = self.buckets[self.assign(width, height)]
        if not max_upscale or _upscale(bucket, width, height) <= max_upscale:
            return bucket
        # the area that the limit allows, as a side rounded down to the step, then down step by step
        side = min(
            self.resolution - self.step, int(math.sqrt(width * height) * max_upscale) // self.step * self.step
        )
        side = max(
            side, self.step
        )  # a photo smaller than one step at the limit still gets the smallest bucket
        for resolution in range(side, 0, -self.step):
            smaller = _buckets_of_area(resolution, self.step)
            bucket = smaller.buckets[smaller.assign(width, height)]
            if _upscale(bucket, width, height) <= max_upscale:
                return bucket
        return bucket  # smaller than one step at the limit: the smallest bucket (step x step)

    def assign(self, width: int, height: int) -> int:
        """Index of the bucket with the nearest aspect ratio (in log space, so 2:1 and 1:2 are equally far)."""
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        return int(np.argmin(np.abs(self._log_ratios - math.log(width / height))))


def _upscale(bucket: tuple[int, int], width: int, height: int) -> float:
    """How many times an image of width x height is enlarged to cover `bucket` (width, height)."""
    return max(bucket[0] / width, bucket[1] / height)


@lru_cache(maxsize=64)
def _buckets_of_area(resolution: int, step: int) -> AspectRatioBuckets:
    """Buckets of about resolution^2 pixels, sides from one step to twice the resolution."""
    return AspectRatioBuckets(resolution, step, step, 2 * resolution)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices that share a bucket; shuffled from (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, bucket_ids: Sequence[int], batch_size: int, seed: int = 0, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bucket_ids = np.asarray(bucket_ids, dtype=np.int64)
        self.batch_size, self.seed, self.drop_last, self.epoch = batch_size, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of `epoch` (call before iterating, like DistributedSampler.set_epoch)."""
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for bucket in np.unique(self.bucket_ids):
            members = rng.permutation(np.flatnonzero(self.bucket_ids == bucket))
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size].tolist()
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        counts = np.bincount(self.bucket_ids) if len(self.bucket_ids) else np.zeros(0, dtype=np.int64)
        full, rest = counts // self.batch_size, counts % self.batch_size
        return int(full.sum() + (0 if self.drop_last else (rest > 0).sum()))


class BucketSampler(Sampler[int]):
    """Indices in runs of `batch_size` that share a bucket (the full batches of `BucketBatchSampler`, flattened),
    so a plain DataLoader(batch_size, drop_last=True) over it yields one-bucket batches. A sampler, not a batch
    sampler, because accelerate passes `set_epoch` and resume positions through a DataLoader's `sampler`."""

    def __init__(self, bucket_ids: Sequence[int], batch_size: int, seed: int = 0):
        self.batches = BucketBatchSampler(bucket_ids, batch_size, seed, drop_last=True)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return (i for batch in self.batches for i in batch)

    def __len__(self) -> int:
        return len(self.batches) * self.batches.batch_size
