"""VAE reconstruction quality on held-out `shapes` images: PSNR and SSIM (LPIPS when available offline), and
how often the shapes detector reads the same objects back from the reconstruction: the ceiling a latent
diffusion model on this VAE can reach on the compositional benchmark."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from latentforge.data.shapes import render_scene, sample_scene
from latentforge.evaluation.detector import detect_objects
from latentforge.evaluation.features import lpips_metric
from latentforge.evaluation.report import Metric, Report
from latentforge.image_metrics import psnr, ssim
from latentforge.imaging import pil_to_tensor, to_pil


def heldout_shapes_images(num_images: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    """`num_images` freshly sampled shapes scenes, rendered: seeded apart from every training sample
    (`shapes_dataset` seeds its scenes 'shapes:<seed>:<i>')."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    return [
        render_scene(sample_scene(random.Random(f"eval:{seed}:{i}"), size=size)) for i in range(num_images)
    ]


@torch.no_grad()
def reconstruct(vae, images: Sequence[Image.Image], batch_size: int = 32) -> torch.Tensor:
    """Decoded posterior modes (B, 3, H, W) in [0, 1]: deterministic, as the diffusion model sees latents."""
    device, dtype = vae.device, vae.dtype
    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="reconstructing", disable=len(starts) < 2):
        x = pil_to_tensor(images[start : start + batch_size]).to(device, dtype) * 2 - 1
        latents = vae.encode(x).latent_dist.mode()
        out.append(((vae.decode(latents).sample.float().cpu() + 1) / 2).clamp(0, 1))
    return torch.cat(out)


def evaluate_vae(
    vae, images: Sequence[Image.Image], batch_size: int = 32, settings: dict | None = None
) -> Report:
    """Reconstruction report: mean and std of PSNR (dB) and SSIM over `images`, LPIPS if available."""
    originals = pil_to_tensor(images)
    rebuilt = reconstruct(vae, images, batch_size)
    psnrs, ssims = psnr(rebuilt, originals), ssim(rebuilt, originals)
    note = f"{len(images)} held-out shapes images, {originals.shape[-1]} px"
    metrics = [
        Metric("psnr_db", psnrs.mean().item(), note),
        Metric("psnr_db_std", psnrs.std().item() if len(images) > 1 else 0.0, note),
        Metric("ssim", ssims.mean().item(), note + ", 11x11 Gaussian window"),
        Metric("ssim_std", ssims.std().item() if len(images) > 1 else 0.0, note),
    ]
    lpips = lpips_metric(str(vae.device))
    if lpips is None:
        metrics.append(Metric("lpips", None, "LPIPS weights not available offline"))
    else:
        with torch.no_grad():
            distance = lpips(rebuilt * 2 - 1, originals * 2 - 1).flatten()
        metrics.append(Metric("lpips", distance.mean().item(), note + ", AlexNet LPIPS"))
    rebuilt_images = to_pil(rebuilt)
    kept = [objects_kept(a, b) for a, b in zip(images, rebuilt_images)]
    metrics.append(
        Metric(
            "objects_kept",
            float(np.mean(kept)),
            note
            + ": reconstruction has the same objects (shape, colour, count) and background, shapes detector",
        )
    )
    # grid: original and reconstruction side by side
    shown = min(len(images), 32)
    pairs = [im for i in range(shown) for im in (images[i].convert("RGB"), rebuilt_images[i])]
    rows = [
        {"psnr_db": p, "ssim": s, "objects_kept": k} for p, s, k in zip(psnrs.tolist(), ssims.tolist(), kept)
    ]
    caption = "each original followed by its reconstruction; pair i is row # i"
    return Report("vae", "VAE reconstruction", metrics, rows, pairs, [], settings or {}, caption)


def objects_kept(original: Image.Image, reconstruction: Image.Image) -> bool:
    """Whether the detector reads the same background and the same (shape, colour) objects, as many of
    each, from `reconstruction` as from `original` (positions are not compared)."""

    def summary(image: Image.Image) -> tuple[str, list[tuple[str, str]]]:
        found = detect_objects(image.convert("RGB"))
        return found.background, sorted((o.shape, o.color) for o in found.objects)

    return summary(original) == summary(reconstruction)
