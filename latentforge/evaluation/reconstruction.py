"""VAE reconstruction quality on held-out `shapes` images: PSNR and SSIM (LPIPS when available offline), and
how often the shapes detector reads the same objects back from the reconstruction: the ceiling a latent
diffusion model on this VAE can reach on the compositional benchmark. Per object, by shape and by size (the
side of its box as read from the original, in px of a 64 px image), the same question says which objects the
VAE loses (issue 17: small stars)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from latentforge.data.shapes import COLORS, Scene, ShapeObject, render_scene, sample_scene
from latentforge.data.shapes_grammar import SHAPES
from latentforge.evaluation.detector import DetectedObject, Detection, detect_objects, nearest_color_labels
from latentforge.evaluation.features import lpips_metric
from latentforge.evaluation.report import Metric, Report
from latentforge.image_metrics import psnr, ssim
from latentforge.imaging import pil_to_tensor, to_pil


def heldout_shapes_images(num_images: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    """`num_images` freshly sampled shapes scenes, rendered: seeded apart from every training sample
    (`shapes_dataset` seeds its scenes 'shapes:<seed>:<i>'). Each image's `info["scene"]` holds its ground
    truth (`Scene.to_json`), which the per-object scores use."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    images = []
    for i in range(num_images):
        scene = sample_scene(random.Random(f"eval:{seed}:{i}"), size=size)
        image = render_scene(scene)
        image.info["scene"] = scene.to_json()
        images.append(image)
    return images


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
    detections = [(_detect(a), _detect(b)) for a, b in zip(images, rebuilt_images)]
    kept = [_summary(a) == _summary(b) for a, b in detections]
    metrics.append(
        Metric(
            "objects_kept",
            float(np.mean(kept)),
            note
            + ": reconstruction has the same objects (shape, colour, count) and background, shapes detector",
        )
    )
    truth = [reference_objects(image, found) for image, (found, _) in zip(images, detections)]
    per_object = [(o, k) for t, (_, b) in zip(truth, detections) for o, k in zip(t, objects_found(t, b))]
    metrics += object_metrics(per_object, originals.shape[-1])
    metrics.append(small_star_solidity(rebuilt_images, truth, originals.shape[-1]))
    # grid: original and reconstruction side by side
    shown = min(len(images), 32)
    pairs = [im for i in range(shown) for im in (images[i].convert("RGB"), rebuilt_images[i])]
    rows = [
        {"psnr_db": p, "ssim": s, "objects_kept": k, "lost": _lost(t, b, originals.shape[-1])}
        for p, s, k, t, (_, b) in zip(psnrs.tolist(), ssims.tolist(), kept, truth, detections)
    ]
    caption = "each original followed by its reconstruction; pair i is row # i"
    return Report("vae", "VAE reconstruction", metrics, rows, pairs, [], settings or {}, caption)


SIZE_BINS = ((14, 20), (21, 26), (27, 32))  # object sides in px at 64 px; the shapes world draws 14-32


def _detect(image: Image.Image) -> Detection:
    return detect_objects(image.convert("RGB"))


def _summary(found: Detection) -> tuple[str, list[tuple[str, str]]]:
    return found.background, sorted((o.shape, o.color) for o in found.objects)


def reference_objects(image: Image.Image, found: Detection) -> Sequence[ShapeObject | DetectedObject]:
    """An original's objects: its ground truth when it carries one (`info["scene"]`), else what the detector
    read (which draws star and triangle tips 1-2 px short, so the size bins shift)."""
    if "scene" in image.info:
        return Scene.from_json(image.info["scene"]).objects
    return found.objects


def object_side(obj: ShapeObject | DetectedObject, image_size: int) -> float:
    """The longer side of the object's box in px of a 64 px image."""
    x0, y0, x1, y1 = obj.box
    return max(x1 - x0, y1 - y0) * 64 / image_size


def objects_found(originals: Sequence[ShapeObject | DetectedObject], rebuilt: Detection) -> list[bool]:
    """Per original object (in order): whether `rebuilt` has an object of the same shape and colour whose
    centre lies in its box, each rebuilt object matched once."""
    unused = list(rebuilt.objects)
    found = []
    for obj in originals:
        x0, y0, x1, y1 = obj.box
        match = next(
            (
                o
                for o in unused
                if (o.shape, o.color) == (obj.shape, obj.color)
                and x0 <= o.center[0] <= x1
                and y0 <= o.center[1] <= y1
            ),
            None,
        )
        if match is not None:
            unused.remove(match)
        found.append(match is not None)
    return found


def object_metrics(
    per_object: list[tuple[ShapeObject | DetectedObject, bool]], image_size: int
) -> list[Metric]:
    """Fraction of the originals' objects found again: all, per shape, per shape and size bin (None where
    there are none)."""
    metrics = [_kept_metric("object_kept", [k for _, k in per_object], "objects")]
    for shape in SHAPES:
        of_shape = [(object_side(o, image_size), k) for o, k in per_object if o.shape == shape]
        metrics.append(_kept_metric(f"object_kept_{shape}", [k for _, k in of_shape], f"{shape}s"))
        for lo, hi in SIZE_BINS:
            kept = [k for side, k in of_shape if lo <= round(side) <= hi]
            note = f"{shape}s of {lo}-{hi} px sides (at 64 px)"
            metrics.append(_kept_metric(f"object_kept_{shape}_{lo}-{hi}px", kept, note))
    return metrics


def _kept_metric(name: str, kept: list[bool], what: str) -> Metric:
    value = float(np.mean(kept)) if kept else None
    return Metric(name, value, f"{len(kept)} {what} in the originals, found again in the reconstructions")


def small_star_solidity(
    rebuilt: Sequence[Image.Image], truth: Sequence[Sequence[ShapeObject | DetectedObject]], image_size: int
) -> Metric:
    """Median solidity of the stars of 14-20 px in the reconstructions: a graded view of how star-like they
    come back, where the found/lost count of so few stars is all-or-nothing."""
    lo, hi = SIZE_BINS[0]
    values = [
        region_solidity(image, o)
        for image, objects in zip(rebuilt, truth)
        for o in objects
        if o.shape == "star" and lo <= round(object_side(o, image_size)) <= hi
    ]
    note = (
        f"{len(values)} stars of {lo}-{hi} px: area / convex hull of the largest region of their colour in their "
        "box (1 px margin) of the reconstruction; a drawn star ~0.55, the detector's stars < 0.78, a pentagon "
        "or blob ~0.9, no region 1"
    )
    return Metric(f"star_{lo}-{hi}px_solidity", float(np.median(values)) if values else None, note)


def region_solidity(image: Image.Image, obj: ShapeObject | DetectedObject) -> float:
    """Area / convex-hull area of the largest region of `obj.color` (nearest named colour) inside `obj.box`
    plus 1 px, holes filled; 1.0 when there is no such region of at least 4 px."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError

    x0, y0, x1, y1 = obj.box
    crop = np.asarray(image.convert("RGB"))[max(0, y0 - 1) : y1 + 1, max(0, x0 - 1) : x1 + 1]
    names = list(COLORS)
    regions, count = ndimage.label(
        nearest_color_labels(crop, np.array(list(COLORS.values()))) == names.index(obj.color)
    )
    if not count:
        return 1.0
    largest = regions == np.bincount(regions.ravel())[1:].argmax() + 1
    ys, xs = np.nonzero(ndimage.binary_fill_holes(largest))
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    try:
        return len(xs) / ConvexHull(corners).volume if len(xs) >= 4 else 1.0
    except QhullError:  # one row or column of pixels
        return 1.0


def _lost(originals: Sequence[ShapeObject | DetectedObject], rebuilt: Detection, image_size: int) -> str:
    """The original objects not found in `rebuilt`, e.g. 'red star 16px'."""
    return ", ".join(
        f"{o.color} {o.shape} {object_side(o, image_size):.0f}px"
        for o, k in zip(originals, objects_found(originals, rebuilt))
        if not k
    )


def objects_kept(original: Image.Image, reconstruction: Image.Image) -> bool:
    """Whether the detector reads the same background and the same (shape, colour) objects, as many of
    each, from `reconstruction` as from `original` (positions are not compared)."""
    return _summary(_detect(original)) == _summary(_detect(reconstruction))
