"""Training data streamed from tar shards (`data.shards`), for sets that do not fit one disk or one cache.

Split across processes without overlap: shard i goes to process i % world_size when the shards divide evenly
among the processes, otherwise every process walks all shards and keeps the samples whose position in the
epoch's stream is its rank modulo world_size (as `datasets.distributed.split_dataset_by_node` does). Every
process takes the same number of samples per epoch (the least any process has), so DDP's steps stay paired.

The order is a pure function of (seed, epoch): shards in a seeded order, the samples of each shard in a
seeded permutation (read by offset from a header index, so the whole shard is shuffled, not a window), and
the crop/flip of each sample seeded by (seed, epoch, shard, sample). A position in the stream is therefore
just a number of batches, which the run's checkpoint already holds; a resume starts at that batch by
arithmetic, reading nothing it skips. (`datasets`' streaming `state_dict` restarts its shuffle buffer empty,
so a shuffled stream would not resume exactly.)
"""

from __future__ import annotations

import json
import logging
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentforge.data.data_config import DataConfig
from latentforge.data.image_dataset import _IMAGE_ERRORS, collate_skip_none, open_image
from latentforge.data.shards import SHARD_IMAGE_EXTENSIONS, find_shards, not_a_tar
from latentforge.data.transforms import ImageCaptionTransform

logger = logging.getLogger(__name__)
Members = dict[str, tuple[int, int]]  # extension -> (offset of the data in the tar, size)


@lru_cache(maxsize=4)
def index_shard(path: Path) -> list[tuple[str, Members]]:
    """(key, members) per sample of an uncompressed tar, in file order, from its headers alone. A shard whose
    first header is unreadable is a ValueError; members past a damaged header are lost (tar stops there)."""
    samples: dict[str, Members] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.isfile():
                    folder, _, name = member.name.rpartition("/")
                    stem, _, ext = name.partition(".")
                    samples.setdefault(f"{folder}/{stem}" if folder else stem, {})[ext.lower()] = (
                        member.offset_data,
                        member.size,
                    )
    except (tarfile.ReadError, OSError) as err:
        if not samples:
            raise not_a_tar(path, err) from None
        logger.warning("%s: unreadable after %d samples (%s); using those", path, len(samples), err)
    return list(samples.items())


def _read(path: Path, where: tuple[int, int]) -> bytes:
    offset, size = where
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read(size)
    if len(data) != size:
        raise OSError(f"{path}: member cut short ({len(data)} of {size} bytes)")
    return data


class ShardStream:
    """This process's samples of `shards`, epoch by epoch: `samples_per_epoch` of them, `sample(epoch, i)` the
    i-th as an item of `ImageCaptionDataset`'s form plus its "key" (None when unreadable)."""

    def __init__(self, shards: list[Path], config: DataConfig, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.shards, self.config, self.rank, self.world_size = shards, config, rank, world_size
        self.transform = ImageCaptionTransform(config.resolution, config.center_crop, config.random_flip)
        self.counts = np.array([len(index_shard(path)) for path in shards], dtype=np.int64)
        self.by_shard = len(shards) % world_size == 0
        if self.by_shard:
            per_rank = [int(self.counts[r::world_size].sum()) for r in range(world_size)]
        else:
            per_rank = [len(range(r, int(self.counts.sum()), world_size)) for r in range(world_size)]
        self.samples_per_epoch = min(per_rank)
        if self.samples_per_epoch == 0:
            raise ValueError(f"data.shards: {len(shards)} shard(s) leave process(es) without samples")

    @lru_cache(maxsize=2)  # noqa: B019 (one stream per run; the cache holds two epochs' orders)
    def _order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shards in this epoch's order, for this process; cumulative sample counts)."""
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.shards))
        if self.by_shard:
            order = order[order % self.world_size == self.rank]
        return order, np.cumsum(self.counts[order])

    @lru_cache(maxsize=8)  # noqa: B019
    def _permutation(self, epoch: int, shard: int) -> np.ndarray:
        return np.random.default_rng([self.config.seed, epoch, shard]).permutation(int(self.counts[shard]))

    def locate(self, epoch: int, i: int) -> tuple[int, int]:
        """(shard, sample number in its tar) of this process's i-th sample of `epoch`."""
        position = i if self.by_shard else i * self.world_size + self.rank
        order, ends = self._order(epoch)
        k = int(np.searchsorted(ends, position, side="right"))
        start = int(ends[k - 1]) if k else 0
        shard = int(order[k])
        return shard, int(self._permutation(epoch, shard)[position - start])

    def sample(self, epoch: int, i: int) -> dict[str, Any] | None:
        shard, number = self.locate(epoch, i)
        path = self.shards[shard]
        key, members = index_shard(path)[number]
        rng = np.random.default_rng([self.config.seed, epoch, shard, number])
        image_ext = next((e for e in SHARD_IMAGE_EXTENSIONS if e in members), None)
        try:
            if image_ext is None:
                raise OSError(f"{path}: sample {key} has no image member")
            image = open_image({"bytes": _read(path, members[image_ext])})
            caption = self._caption(path, members)
        except (*_IMAGE_ERRORS, UnicodeDecodeError) as err:
            logger.debug("skipping %s of %s: %s", key, path, err)
            return None
        sample = self.transform.apply(image, caption, rng)
        return {
            "pixel_values": sample.pixels,
            "text": sample.caption,
            "index": i,
            "original_size": (image.height, image.width),
            "crop_top_left": sample.crop_top_left,
            "key": f"{path.name}/{key}",
        }

    def _caption(self, path: Path, members: Members) -> str:
        """<key>.txt, else the caption_column (or "caption") field of <key>.json; "" when there is neither."""
        if "txt" in members:
            return _read(path, members["txt"]).decode("utf-8").strip()
        if "json" in members:
            record = json.loads(_read(path, members["json"]))
            if not isinstance(record, dict):  # a list or a string: a bad member, skipped like a broken image
                raise ValueError(f"{path}: its .json caption is a {type(record).__name__}, not an object")
            return str(record.get(self.config.caption_column, record.get("caption", "")) or "")
        return ""


class _Batches(torch.utils.data.IterableDataset):
    """Batches start..stop-1 of one epoch; with DataLoader workers, worker w makes batches w, w + n, ... and the
    DataLoader takes them round-robin, so the order is the same for any number of workers."""

    def __init__(self, stream: ShardStream, epoch: int, start: int, stop: int, batch_size: int) -> None:
        self.stream, self.epoch, self.start, self.stop, self.batch_size = (
            stream,
            epoch,
            start,
            stop,
            batch_size,
        )

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for b in range(self.start + worker, self.stop, workers):
            first = b * self.batch_size
            items = [self.stream.sample(self.epoch, i) for i in range(first, first + self.batch_size)]
            batch = collate_skip_none(items)
            batch["key"] = [item["key"] for item in items if item is not None]
            yield batch


class ShardLoader:
    """Batches {"pixel_values" (B, 3, R, R) in [-1, 1], "text", "key", "skipped", ...} of a `ShardStream`
    (unreadable samples dropped from their batch and counted in "skipped"), full batches only. What the run's
    loop asks of a loader: len (batches per epoch), set_epoch, and skip_first_batches, which starts later
    without reading the samples it skips."""

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int = 0, start: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"optim.batch_size must be >= 1, got {batch_size}")
        self.stream, self.batch_size, self.num_workers, self.start, self.epoch = (
            stream,
            batch_size,
            num_workers,
            start,
            0,
        )

    def __len__(self) -> int:
        return self.stream.samples_per_epoch // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_first_batches(self, num_batches: int) -> ShardLoader:
        later = ShardLoader(self.stream, self.batch_size, self.num_workers, self.start + num_batches)
        later.set_epoch(self.epoch)
        return later

    def __iter__(self):
        batches = _Batches(self.stream, self.epoch, self.start, len(self), self.batch_size)
        # its own generator: making an iterator must not draw from the global RNG (resume replays that)
        generator = torch.Generator().manual_seed(self.stream.config.seed)
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, num_workers=self.num_workers, generator=generator
        )
        return iter(loader)


def shard_loader(config: DataConfig, batch_size: int, rank: int = 0, world_size: int = 1) -> ShardLoader:
    """The loader of process `rank` of `world_size` over `config.shards`."""
    stream = ShardStream(find_shards(config.shards), config, rank, world_size)
    if len(stream.shards) % world_size:
        logger.warning(
            "%d shards do not divide among %d processes: each process reads every shard and keeps every "
            "%d-th sample (more reading; use a multiple of %d shards)",
            len(stream.shards),
            world_size,
            world_size,
            world_size,
        )
    return ShardLoader(stream, batch_size, config.num_workers)
