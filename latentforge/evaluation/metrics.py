"""Distribution metrics: FID, KID and CLIP score. Pure functions over feature arrays; the feature spaces
they are computed in live in `latentforge.evaluation.features`, per-image PSNR/SSIM in
`latentforge.image_metrics`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

KID_FULL_KERNEL_MAX = 6000  # up to this many features in all, KID computes all kernel values at once


def _as_features(features: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must be a (N, D) feature array with N >= 2, got shape {array.shape}")
    return array.astype(np.float64)


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """Tr((S_a S_b)^(1/2)) for S = X^T X, with a = X_a (N, D) and b = X_b (M, D) (centred, pre-scaled).

    The nonzero eigenvalues of S_a S_b = a^T a b^T b are those of (a b^T)^T (a b^T), so the trace of the
    root is the sum of the singular values of the (N, M) matrix a b^T: cheap when N, M < D. Otherwise
    use the symmetric PSD form S_a^(1/2) S_b S_a^(1/2), (D, D), which has the same eigenvalues.
    """
    if max(len(a), len(b)) <= a.shape[1]:
        return float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    values, vectors = np.linalg.eigh(a.T @ a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ (b.T @ b) @ root_a)
    return float(np.sqrt(np.clip(cross, 0, None)).sum())


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D): the FID of
    Heusel et al. 2017 when the features are Inception pool3 activations.

    d^2 = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)), sample covariances (ddof = 1).
    """
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    # S = X^T X with X the centred features / sqrt(N - 1), so Tr(S) = |X|_F^2
    x_a = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    x_b = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    mean_term = np.sum((a.mean(0) - b.mean(0)) ** 2)
    distance = mean_term + np.sum(x_a**2) + np.sum(x_b**2) - 2 * trace_sqrt_product(x_a, x_b)
    return float(max(distance, 0.0))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's cubic kernel k(x, y) = (x.y / D + 1)^3 between rows of x (N, D) and y (M, D): (N, M)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def unbiased_mmd2(k_aa: np.ndarray, k_bb: np.ndarray, k_ab: np.ndarray) -> float:
    """Unbiased MMD^2 from the kernel matrices of two sets of m samples each: the diagonal k(x_i, x_i)
    terms are left out of the within-set means."""
    m = len(k_aa)
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2 * k_ab.mean())


def polynomial_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size feature sets (m, D) under the cubic kernel."""
    return unbiased_mmd2(polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b))


def kernel_inception_distance(
    features_a: np.ndarray | torch.Tensor,
    features_b: np.ndarray | torch.Tensor,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets: the KID of
    Binkowski et al. 2018 ("Demystifying MMD GANs", Sec. 4), subsets drawn without replacement."""
    a, b = _as_features(features_a, "features_a"), _as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"need num_subsets >= 1 and subset_size >= 2, got {num_subsets}, {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    subsets = [
        (rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False))
        for _ in range(num_subsets)
    ]
    if len(a) + len(b) > KID_FULL_KERNEL_MAX:  # full kernel matrices too big: one subset at a time
        values = [polynomial_mmd2(a[i], b[j]) for i, j in subsets]
    else:  # three matrix products in all, then every subset indexes into them
        k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
        values = [
            unbiased_mmd2(k_aa[np.ix_(i, i)], k_bb[np.ix_(j, j)], k_ab[np.ix_(i, j)]) for i, j in subsets
        ]
    return float(np.mean(values)), float(np.std(values))


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """CLIP score per pair, (N,): 100 * max(cos(image, text), 0) (Hessel et al. 2021, "CLIPScore", with
    weight 100 as torchmetrics); embeddings (N, D), row i of both belongs to pair i."""
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise ValueError(
            f"image_embeds and text_embeds must both be (N, D), got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}"
        )
    cosine = F.cosine_similarity(image_embeds.double(), text_embeds.double(), dim=-1)
    return 100 * cosine.clamp(min=0)
