"""Latent and text-embedding cache of the U-Net trainer: the frozen VAE and text encoder run once over the
data, not on every step (what makes U-Net training several times faster on a CPU; see
benchmarks/train_throughput.py).

Stored in `output_dir/cache/<key>/` as safetensors: posterior mean and std per image (and per flip
variant when random_flip is on: the flipped image with 'left'/'right' swapped in its caption), one
embedding and one row of token ids per distinct caption (row 0 = the empty caption used for caption
dropout; the ids feed a text encoder that trains with the U-Net), and for inpainting the uint8 pixels.
`key` hashes everything the contents depend on: VAE and text-encoder weights, the tokenizer, resolution,
transform, dataset fingerprint and format; any change gives a new cache. Training reads it through
`LatentCache.row_loader` (shuffled row numbers) and `sample_inputs` (the tensors of those rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from latentforge.data.training_data import DataConfig, image_loader
from latentforge.data.transforms import swap_left_right
from latentforge.models.tokenizer import tokenize
from latentforge.training.run_dir import RunDir

FORMAT = 2
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LatentCache:
    """mean/std: (N, V, C, h, w) posterior of each image (V = 2 flip variants or 1); text_index: (N, V) rows
    of `embeds` (U, L, D) and `input_ids` (U, L), row 0 = ""; pixels: (N, V, 3, H, W) uint8 or None
    (inpainting only)."""

    mean: torch.Tensor
    std: torch.Tensor
    text_index: torch.Tensor
    embeds: torch.Tensor
    input_ids: torch.Tensor
    pixels: torch.Tensor | None
    skipped: int  # unreadable images left out

    def __len__(self) -> int:
        return self.mean.shape[0]

    def row_loader(self, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
        """Shuffled batches {"index": (B,)} of row numbers (full batches only; order seeded by `seed`)."""
        return torch.utils.data.DataLoader(
            _Rows(len(self)),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(seed),
        )

    def to(self, device: torch.device) -> LatentCache:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return LatentCache(
            move(self.mean),
            move(self.std),
            move(self.text_index),
            move(self.embeds),
            move(self.input_ids),
            move(self.pixels),
            self.skipped,
        )


class _Rows(torch.utils.data.Dataset):
    """Item i -> {"index": i}: the loader shuffles cache rows; the tensors stay in the cache."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"index": i}


def sample_inputs(
    cache: LatentCache, idx: torch.Tensor, scaling: float, caption_dropout: float, text_encoder=None
):
    """Latents (B, C, h, w) sampled from the cached posteriors (random flip variant), caption embeddings
    (B, L, D) with `caption_dropout` of them replaced by the "" embedding, pixels (B, 3, H, W) or None.
    The embeddings come from the cache, or from `text_encoder` (with gradients) when it trains."""
    variants = cache.mean.shape[1]
    variant = torch.randint(0, variants, (len(idx),)).to(idx.device)
    mean, std = cache.mean[idx, variant].float(), cache.std[idx, variant].float()
    latents = (mean + std * torch.randn_like(mean)) * scaling
    rows = cache.text_index[idx, variant]
    rows = torch.where(torch.rand(len(idx)).to(idx.device) < caption_dropout, torch.zeros_like(rows), rows)
    pixels = None if cache.pixels is None else cache.pixels[idx, variant].float() / 127.5 - 1
    embeds = cache.embeds[rows].float() if text_encoder is None else text_encoder(cache.input_ids[rows])[0]
    return latents, embeds, pixels


def _tensor_digest(digest, module: torch.nn.Module) -> None:
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())


def cache_key(vae, text_encoder, tokenizer, dataset, data: DataConfig, with_pixels: bool, dtype: str) -> str:
    """Hex digest of everything the cached tensors depend on."""
    digest = hashlib.sha256()
    _tensor_digest(digest, vae.encoder)  # the latents depend on the encoder half only: a decoder fine-tune
    if vae.quant_conv is not None:  # (`train vae train_encoder=false`) keeps the cache
        _tensor_digest(digest, vae.quant_conv)
    _tensor_digest(digest, text_encoder)
    settings = {
        "format": FORMAT,
        "tokenizer": [len(tokenizer), tokenizer.pad_token, tokenizer.model_max_length],
        "resolution": data.resolution,
        "center_crop": data.center_crop,
        "random_flip": data.random_flip,
        "columns": [data.image_column, data.caption_column],
        "dataset": getattr(dataset, "_fingerprint", None) or str(len(dataset)),
        "pixels": with_pixels,
        "dtype": dtype,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:20]


@torch.no_grad()
def _encode_images(vae, dataset, data: DataConfig, device, batch_size: int, with_pixels: bool):
    """Posterior (mean, std) of every readable image (and of its mirror with random_flip), captions, pixels."""
    variants = 2 if data.random_flip else 1
    means, stds, pixels, captions, skipped = [], [], [], [], 0
    loader = image_loader(dataset, data, batch_size, shuffle=False, flip=False)
    for batch in tqdm(loader, desc="caching latents", disable=len(dataset) < 256):
        skipped += batch["skipped"]
        if not len(batch["text"]):
            continue
        images = batch["pixel_values"]
        views = [images, images.flip(-1)][:variants]
        dists = [vae.encode(v.to(device, vae.dtype)).latent_dist for v in views]
        means.append(torch.stack([d.mean.float().cpu() for d in dists], 1))
        stds.append(torch.stack([d.std.float().cpu() for d in dists], 1))
        if with_pixels:
            pixels.append(
                torch.stack([((v + 1) * 127.5).round().clamp(0, 255).to(torch.uint8) for v in views], 1)
            )
        captions.extend(zip(batch["text"], [swap_left_right(t) for t in batch["text"]]))
    if not means:
        raise ValueError("data: no readable image to cache")
    captions = [list(pair)[:variants] for pair in captions]
    return torch.cat(means), torch.cat(stds), (torch.cat(pixels) if with_pixels else None), captions, skipped


@torch.no_grad()
def encode_captions(text_encoder, tokenizer, texts: list[str], device, batch_size: int = 64) -> torch.Tensor:
    """last_hidden_state (N, L, D) of `texts`, tokenised as diffusers' pipelines do (pad to max, truncate)."""
    ids = tokenize(tokenizer, texts)
    out = [text_encoder(chunk.to(device))[0].float().cpu() for chunk in ids.split(batch_size)]
    return torch.cat(out)


def build_cache(components, dataset, data: DataConfig, device, with_pixels: bool, dtype: str) -> dict:
    """All cache tensors as a dict (for saving), computed with the frozen VAE and text encoder."""
    mean, std, pixels, captions, skipped = _encode_images(
        components.vae, dataset, data, device, 32, with_pixels
    )
    unique = [""] + sorted({c for pair in captions for c in pair} - {""})
    row = {text: i for i, text in enumerate(unique)}
    tensors = {
        "mean": mean.to(DTYPES[dtype]),
        "std": std.to(DTYPES[dtype]),
        "text_index": torch.tensor([[row[c] for c in pair] for pair in captions], dtype=torch.long),
        "embeds": encode_captions(components.text_encoder, components.tokenizer, unique, device).to(
            DTYPES[dtype]
        ),
        "input_ids": tokenize(components.tokenizer, unique).to(torch.int32),
        "skipped": torch.tensor([skipped]),
    }
    if pixels is not None:
        tensors["pixels"] = pixels
    return tensors


def load_or_build_cache(
    accelerator: Accelerator,
    components,
    dataset,
    data: DataConfig,
    output_dir: str | Path,
    with_pixels: bool,
    dtype: str,
) -> LatentCache:
    """The cache for this (model, data) pair: built by the main process if missing, then loaded everywhere."""
    if dtype not in DTYPES:
        raise ValueError(f"cache_dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if not data.center_crop:
        raise ValueError(
            "data.center_crop=false gives a new random crop every epoch, which a latent cache cannot hold"
        )
    root = RunDir.of(output_dir).cache
    key = cache_key(
        components.vae, components.text_encoder, components.tokenizer, dataset, data, with_pixels, dtype
    )
    folder = root / key
    if accelerator.is_main_process and not (folder / "meta.json").is_file():
        if root.is_dir():  # caches of other weights/settings are stale for this run
            for old in root.iterdir():
                shutil.rmtree(old, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        tensors = build_cache(components, dataset, data, accelerator.device, with_pixels, dtype)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        save_file(tensors, tmp / "cache.safetensors")
        meta = {"key": key, "images": tensors["mean"].shape[0], "captions": tensors["embeds"].shape[0]}
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: marks the cache complete
        os.replace(tmp, folder)
        accelerator.print(
            f"encoded the {meta['images']} training images to latents and their {meta['captions']} different "
            f"captions to text embeddings, once for the run (kept in {folder})"
        )
    accelerator.wait_for_everyone()
    t = load_file(folder / "cache.safetensors")
    return LatentCache(
        t["mean"],
        t["std"],
        t["text_index"],
        t["embeds"],
        t["input_ids"].long(),
        t.get("pixels"),
        int(t["skipped"]),
    )
