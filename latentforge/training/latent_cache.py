"""Latent and text-embedding cache of the U-Net trainer: the frozen VAE and text encoder run once over the
data, not on every step (what makes U-Net training several times faster on a CPU; see
benchmarks/train_throughput.py).

Stored in `output_dir/cache/<key>/` as safetensors: posterior mean and std per image, stacked per
aspect-ratio bucket (one bucket when data.buckets is off), with each image's original size and crop (and
per flip variant when random_flip is on: the flipped image with 'left'/'right' swapped in its caption), one
embedding and one row of token ids per distinct caption (row 0 = the empty caption used for caption
dropout; the ids feed a text encoder that trains with the U-Net), and for inpainting the uint8 pixels.
`key` hashes everything the contents depend on: VAE and text-encoder weights, the tokenizer, resolution,
transform, dataset fingerprint and format; any change gives a new cache. A run that trains its text encoder
reads the ids only: its cache holds no embeddings and its key leaves the text encoder out, so runs that
start from other text-encoder weights (another seed, another architecture) share the encoded images.
Training reads it through `LatentCache.row_loader` (shuffled row numbers, one bucket per batch) and
`sample_inputs` (the tensors of those rows). `cache_encoding` computes the contents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from latentforge.atomic_files import staged_folder
from latentforge.data.buckets import BucketSampler
from latentforge.data.data_config import DataConfig
from latentforge.training.all_processes import run_together
from latentforge.training.cache_encoding import DTYPES, build_cache
from latentforge.training.run_dir import RunDir

FORMAT = 3


@dataclass
class LatentCache:
    """Per bucket b (one size of image; one bucket without aspect-ratio buckets): mean[b], std[b]
    (n_b, V, C, h_b, w_b) posteriors of its images (V = 2 flip variants or 1), pixels[b] (n_b, V, 3, H_b, W_b)
    uint8 (inpainting only). Per row i (N readable images, in dataset order): index[i] (its dataset row),
    bucket[i] and slot[i] (its place in its bucket); text_index (N, V) rows of `embeds` (U, L, D) and `input_ids` (U, L), row 0 = "".
    The cache file also records each image's original_size and crop_top_left, which no step reads yet."""

    mean: list[torch.Tensor]
    std: list[torch.Tensor]
    pixels: list[torch.Tensor] | None
    index: torch.Tensor
    bucket: torch.Tensor
    slot: torch.Tensor
    text_index: torch.Tensor
    embeds: torch.Tensor
    input_ids: torch.Tensor
    sizes: list[tuple[int, int]]  # (height, width) in pixels of each bucket
    skipped: int  # unreadable images left out

    def __len__(self) -> int:
        return len(self.bucket)

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        """Images per bucket, keyed by its (height, width) in pixels, most used first."""
        counts = torch.bincount(self.bucket.cpu(), minlength=len(self.sizes)).tolist()
        return dict(sorted(zip(map(tuple, self.sizes), counts), key=lambda kv: -kv[1]))

    def row_loader(
        self, batch_size: int, seed: int, rows: torch.Tensor | None = None
    ) -> torch.utils.data.DataLoader:
        """Shuffled batches {"index": (B,)} of row numbers (`rows`, default all), full batches only, each from
        one bucket; the order is a function of (seed, epoch)."""
        rows = torch.arange(len(self)) if rows is None else rows
        # its own generator: making an iterator must not draw from the global RNG (resume replays that)
        generator = torch.Generator().manual_seed(seed)
        if len(self.sizes) == 1:  # accelerate swaps the shuffle for its seedable sampler
            order = {"shuffle": True}
        else:
            order = {"sampler": BucketSampler(self.bucket[rows].tolist(), batch_size, seed)}
        return torch.utils.data.DataLoader(
            _Rows(rows.tolist()), batch_size=batch_size, drop_last=True, generator=generator, **order
        )

    def to(self, device: torch.device) -> LatentCache:
        def move(value):
            if isinstance(value, torch.Tensor):
                return value.to(device)
            is_tensors = isinstance(value, list) and all(isinstance(v, torch.Tensor) for v in value)
            return [v.to(device) for v in value] if is_tensors else value

        return dataclasses.replace(
            self, **{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)}
        )


class _Rows(torch.utils.data.Dataset):
    """Item i -> {"index": rows[i]}: the loader shuffles cache rows; the tensors stay in the cache."""

    def __init__(self, rows: list[int]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"index": self.rows[i]}


def sample_inputs(
    cache: LatentCache,
    idx: torch.Tensor,
    scaling: float,
    caption_dropout: float,
    text_encoder=None,
    dropped: torch.Tensor | None = None,
    variant: torch.Tensor | None = None,
):
    """Latents (B, C, h, w) sampled from the cached posteriors of rows `idx` (all of one bucket) at a random
    flip variant (or at `variant` (B,) long, when given), caption embeddings (B, L, D) with `caption_dropout`
    of them replaced by the "" embedding (or the rows where `dropped` (B,) bool is set, when given), pixels
    (B, 3, H, W) or None. The embeddings come from the cache, or from `text_encoder` (with gradients) when it
    trains."""
    buckets = cache.bucket[idx].unique()
    if len(buckets) != 1:
        raise ValueError(
            f"one batch must hold one bucket, rows {idx.tolist()} are in buckets {buckets.tolist()}"
        )
    bucket, slots = int(buckets[0]), cache.slot[idx]
    variants = cache.mean[bucket].shape[1]
    variant = (torch.randint(0, variants, (len(idx),)) if variant is None else variant).to(idx.device)
    mean, std = cache.mean[bucket][slots, variant].float(), cache.std[bucket][slots, variant].float()
    latents = (mean + std * torch.randn_like(mean)) * scaling
    rows = cache.text_index[idx, variant]
    dropped = torch.rand(len(idx)) < caption_dropout if dropped is None else dropped
    rows = torch.where(dropped.to(idx.device), torch.zeros_like(rows), rows)
    pixels = None if cache.pixels is None else cache.pixels[bucket][slots, variant].float() / 127.5 - 1
    if text_encoder is None and not len(cache.embeds):
        raise ValueError(
            "this latent cache holds no text embeddings (it was built for a run that trains its text encoder): "
            "pass the text encoder"
        )
    embeds = cache.embeds[rows].float() if text_encoder is None else text_encoder(cache.input_ids[rows])[0]
    return latents, embeds, pixels


def _tensor_digest(digest, module: torch.nn.Module) -> None:
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


def cache_key(vae, text_encoder, tokenizer, dataset, data: DataConfig, with_pixels: bool, dtype: str) -> str:
    """Hex digest of everything the cached tensors depend on; `text_encoder` None: a cache without embeddings."""
    digest = hashlib.sha256()
    _tensor_digest(digest, vae.encoder)  # the latents depend on the encoder half only: a decoder fine-tune
    if vae.quant_conv is not None:  # (`train vae train_encoder=false`) keeps the cache
        _tensor_digest(digest, vae.quant_conv)
    if text_encoder is not None:
        _tensor_digest(digest, text_encoder)
    settings = {
        "embeddings": text_encoder is not None,
        "format": FORMAT,
        "tokenizer": [len(tokenizer), tokenizer.pad_token, tokenizer.model_max_length],
        "resolution": data.resolution,
        "center_crop": data.center_crop,
        "random_flip": data.random_flip,
        "columns": [data.image_column, data.caption_column],
        "buckets": [
            data.buckets,
            data.min_bucket_reso,
            data.max_bucket_reso,
            data.bucket_reso_steps,
            data.max_upscale,
        ]
        if data.buckets
        else False,
        "dataset": getattr(dataset, "_fingerprint", None) or str(len(dataset)),
        "pixels": with_pixels,
        "dtype": dtype,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def _intact(folder: Path) -> bool:
    """Whether the cache in `folder` is complete (meta.json, written last) and its file is readable with the
    image count meta.json records. A damaged cache (a cut or garbled file) is derived data: it is said and
    built again rather than failing the run."""
    if not (folder / "meta.json").is_file():
        return False
    from safetensors import SafetensorError, safe_open

    try:
        meta = json.loads((folder / "meta.json").read_text())
        with safe_open(folder / "cache.safetensors", framework="pt") as handle:
            complete = handle.get_slice("bucket").get_shape() == [meta["images"]]
        reason = "" if complete else "its image count differs from meta.json"
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        reason = f"{type(err).__name__}: {err}"
    if reason:
        print(f"the latent cache in {folder} is damaged ({reason}); building it again", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    return not reason


def load_or_build_cache(
    accelerator: Accelerator,
    components,
    dataset,
    data: DataConfig,
    output_dir: str | Path,
    with_pixels: bool,
    dtype: str,
    with_embeddings: bool = True,
) -> LatentCache:
    """The cache for this (model, data) pair: built by the main process if missing, then loaded everywhere.
    `with_embeddings` False (a run that trains its text encoder): token ids only, no text embeddings."""
    if dtype not in DTYPES:
        raise ValueError(f"cache_dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not data.center_crop:
        raise ValueError(
            "data.center_crop=false gives a new random crop every epoch, which a latent cache cannot hold"
        )
    root = RunDir.of(output_dir).cache
    text_encoder = components.text_encoder if with_embeddings else None
    key = cache_key(components.vae, text_encoder, components.tokenizer, dataset, data, with_pixels, dtype)
    folder = root / key

    def build() -> None:  # the main process, when there is no intact cache
        if not accelerator.is_main_process or _intact(folder):
            return
        if root.is_dir():  # caches of other weights/settings are stale for this run
            for old in root.iterdir():
                shutil.rmtree(old, ignore_errors=True)
        # the build draws from the global RNG (its loader's seed) and a rerun that finds the cache does not: a
        # run restarted before its first checkpoint would train on other noise than one run straight through
        device = accelerator.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            tensors = build_cache(components, dataset, data, device, with_pixels, dtype, with_embeddings)
        meta = {"key": key, "images": len(tensors["bucket"]), "captions": len(tensors["input_ids"])}
        with staged_folder(folder) as staging:  # a full disk leaves no cache that looks complete
            save_file(tensors, staging / "cache.safetensors")
            (staging / "meta.json").write_text(json.dumps(meta))
        left_out = int(tensors["skipped"])
        captions = "text embeddings" if with_embeddings else "token ids"
        accelerator.print(
            f"encoded the {meta['images']} training images to latents and their {meta['captions']} different "
            f"captions to {captions}, once for the run (kept in {folder})"
            + (f"; {left_out} unreadable image(s) left out" if left_out else "")
        )

    # the other processes wait for the build, and stop with the main process when it fails
    run_together(accelerator, build, f"the latent cache to {folder}", lambda: "no cache was kept")
    t = load_file(folder / "cache.safetensors")
    n = len(t["sizes"])
    return LatentCache(
        mean=[t[f"mean.{b}"] for b in range(n)],
        std=[t[f"std.{b}"] for b in range(n)],
        pixels=[t[f"pixels.{b}"] for b in range(n)] if with_pixels else None,
        index=t["index"],
        bucket=t["bucket"],
        slot=t["slot"],
        text_index=t["text_index"],
        embeds=t["embeds"],
        input_ids=t["input_ids"].long(),
        sizes=[tuple(size) for size in t["sizes"].tolist()],
        skipped=int(t["skipped"]),
    )
