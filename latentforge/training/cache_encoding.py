"""What fills the U-Net trainer's latent cache: the frozen VAE over every image (each at its aspect-ratio
bucket's size, and its mirror with random_flip), the frozen text encoder over every distinct caption.
`build_cache` returns the tensors that `latent_cache.load_or_build_cache` saves and loads."""

from __future__ import annotations

import sys
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from latentforge.data.buckets import BucketBatchSampler
from latentforge.data.data_config import DataConfig
from latentforge.data.training_data import assign_buckets, image_loader
from latentforge.data.transforms import swap_left_right
from latentforge.models.tokenizer import tokenize

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@torch.no_grad()
def _encode_images(vae, dataset, data: DataConfig, device, with_pixels: bool, vae_factor: int) -> dict:
    """Per readable dataset index: posterior (mean, std) (V, C, h, w) of the image and of its mirror with
    random_flip, its pixels (V, 3, H, W) uint8 when asked, captions, bucket, original size and crop."""
    variants = 2 if data.random_flip else 1
    sizes, ids = assign_buckets(dataset, data, vae_factor)
    sampler = BucketBatchSampler(ids, batch_size=32, seed=0)
    loader = image_loader(
        dataset, data, 32, False, flip=False, target_sizes=[sizes[i] for i in ids], batch_sampler=sampler
    )
    rows, unreadable = {}, []
    for batch in tqdm(loader, desc="caching latents", disable=len(dataset) < 256):
        unreadable += batch["unreadable"]
        if not len(batch["text"]):
            continue
        views = [batch["pixel_values"], batch["pixel_values"].flip(-1)][:variants]
        dists = [vae.encode(v.to(device, vae.dtype)).latent_dist for v in views]
        mean = torch.stack([d.mean.float().cpu() for d in dists], 1)
        std = torch.stack([d.std.float().cpu() for d in dists], 1)
        pixels = (
            torch.stack([((v + 1) * 127.5).round().clamp(0, 255).to(torch.uint8) for v in views], 1)
            if with_pixels
            else None
        )
        for j, index in enumerate(batch["index"].tolist()):
            text = batch["text"][j]
            rows[index] = {
                "index": index,
                "mean": mean[j],
                "std": std[j],
                "pixels": pixels[j] if with_pixels else None,
                "captions": [text, swap_left_right(text)][:variants],
                "bucket": ids[index],
                "original_size": batch["original_size"][j],
                "crop_top_left": batch["crop_top_left"][j],
            }
    check_unreadable(unreadable, len(dataset), data.max_corrupt_fraction)
    return {"rows": [rows[i] for i in sorted(rows)], "sizes": sizes, "skipped": len(unreadable)}


def check_unreadable(unreadable: list, total: int, limit: float, shown: int = 5) -> None:
    """Say how many of `total` images could not be read, naming the first `shown` with the reason; ValueError
    (nothing is cached) when they are more than `limit` (data.max_corrupt_fraction) of them, or all."""
    if not unreadable:
        return
    names = "; ".join(str(u) for u in sorted(unreadable, key=lambda u: u.index)[:shown])
    more = f" and {len(unreadable) - shown} more" if len(unreadable) > shown else ""
    message = f"data: {len(unreadable)} of {total} images could not be read: {names}{more}"
    if len(unreadable) > limit * total or len(unreadable) == total:
        raise ValueError(
            f"{message}. That is more than data.max_corrupt_fraction={limit} of them: fix or remove the files "
            "(or raise data.max_corrupt_fraction)"
        )
    print(f"{message}; they are left out of training", file=sys.stderr)


@torch.no_grad()
def encode_captions(text_encoder, tokenizer, texts: list[str], device, batch_size: int = 64) -> torch.Tensor:
    """last_hidden_state (N, L, D) of `texts`, tokenised as diffusers' pipelines do (pad to max, truncate)."""
    ids = tokenize(tokenizer, texts)
    out = [text_encoder(chunk.to(device))[0].float().cpu() for chunk in ids.split(batch_size)]
    return torch.cat(out)


def _bucket_tensors(rows: list[dict], n_buckets: int, dtype: torch.dtype, with_pixels: bool) -> dict:
    """mean.<b>, std.<b> (and pixels.<b>) stacked per bucket in row order; each row's bucket and slot."""
    members = defaultdict(list)
    slots = []
    for row in rows:
        slots.append(len(members[row["bucket"]]))
        members[row["bucket"]].append(row)
    tensors = {
        "bucket": torch.tensor([row["bucket"] for row in rows], dtype=torch.long),
        "slot": torch.tensor(slots, dtype=torch.long),
    }
    for b in range(n_buckets):
        names = ("mean", "std", "pixels") if with_pixels else ("mean", "std")
        for name in names:
            stacked = torch.stack([row[name] for row in members[b]]) if members[b] else torch.zeros(0)
            tensors[f"{name}.{b}"] = stacked if name == "pixels" else stacked.to(dtype)
    return tensors


def build_cache(
    components, dataset, data: DataConfig, device, with_pixels: bool, dtype: str, with_embeddings: bool = True
) -> dict[str, torch.Tensor]:
    """All cache tensors as a dict (for saving), computed with the frozen VAE and text encoder (no text
    embeddings, an empty tensor, when not `with_embeddings`)."""
    encoded = _encode_images(components.vae, dataset, data, device, with_pixels, components.vae_scale_factor)
    rows = encoded["rows"]
    unique = [""] + sorted({c for row in rows for c in row["captions"]} - {""})
    text_row = {text: i for i, text in enumerate(unique)}
    embeds = (
        encode_captions(components.text_encoder, components.tokenizer, unique, device)
        if with_embeddings
        else torch.zeros(0)
    )
    return {
        **_bucket_tensors(rows, len(encoded["sizes"]), DTYPES[dtype], with_pixels),
        "sizes": torch.tensor(encoded["sizes"], dtype=torch.long),
        "index": torch.tensor([row["index"] for row in rows], dtype=torch.long),
        "text_index": torch.tensor(
            [[text_row[c] for c in row["captions"]] for row in rows], dtype=torch.long
        ),
        "embeds": embeds.to(DTYPES[dtype]),
        "input_ids": tokenize(components.tokenizer, unique).to(torch.int32),
        "original_size": torch.stack([row["original_size"] for row in rows]),
        "crop_top_left": torch.stack([row["crop_top_left"] for row in rows]),
        "skipped": torch.tensor([encoded["skipped"]]),
    }
