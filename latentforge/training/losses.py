"""Loss math of the trainers as small pure functions (unit-tested against hand-computed values).

Diffusion: Ho et al. 2020 (eps target), Salimans & Ho 2022 §4 (v target), Hang et al. 2023 "Efficient
Diffusion Training via Min-SNR Weighting Strategy" (min-SNR-gamma), Esser et al. 2024 (SD3, logit-normal
timesteps). VAE: Rombach et al. 2022 (LDM) appendix G / Esser et al. 2021 (taming-transformers) for the KL
term, hinge PatchGAN losses and the adaptive discriminator weight.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_density_for_timestep_sampling

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) so it broadcasts against `like`."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {prediction_type!r}")


def diffusion_target(
    latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod_t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What the U-Net learns to predict; latents/noise: (B, C, H, W), alphas_cumprod_t: (B,) in (0, 1].

    epsilon: the noise; v_prediction: v = sqrt(a) * noise - sqrt(1 - a) * x0; sample: x0.
    """
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return latents
    a = _per_sample(alphas_cumprod_t.to(latents.dtype), latents)
    return a.sqrt() * noise - (1 - a).sqrt() * latents


def predicted_sample(
    noisy: torch.Tensor, pred: torch.Tensor, alphas_cumprod_t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The clean latents x0 that the model's prediction `pred` implies for the noisy latents x_t = `noisy`
    (DDPM eq. 15; for v: x0 = sqrt(a) * x_t - sqrt(1 - a) * v, Salimans & Ho 2022 §4); same shape."""
    _check_prediction_type(prediction_type)
    if prediction_type == "sample":
        return pred
    a = _per_sample(alphas_cumprod_t.to(pred.dtype), pred)
    if prediction_type == "epsilon":
        return (noisy - (1 - a).sqrt() * pred) / a.sqrt()
    return a.sqrt() * noisy - (1 - a).sqrt() * pred


def snr(alphas_cumprod_t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) of each timestep; (B,) -> (B,)."""
    return alphas_cumprod_t / (1 - alphas_cumprod_t)


def check_timestep_sampling(sampling: str, logit_std: float = 1.0) -> None:
    """ValueError unless `sampling` is one of TIMESTEP_SAMPLINGS and `logit_std` > 0."""
    if sampling not in TIMESTEP_SAMPLINGS or logit_std <= 0:
        raise ValueError(
            f"timestep_sampling must be one of {list(TIMESTEP_SAMPLINGS)} (got {sampling!r}) and logit_std > 0 "
            f"(got {logit_std})"
        )


def sample_timesteps(
    batch_size: int,
    num_train_timesteps: int,
    sampling: str = "uniform",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training timesteps (B,) in [0, num_train_timesteps). "uniform": every step equally often (DDPM);
    "logit_normal": t / T = sigmoid(N(logit_mean, logit_std)) (Esser et al. 2024, SD3 §3.1), which draws the
    middle of the schedule more often than its ends, through diffusers' SD3 sampler."""
    check_timestep_sampling(sampling, logit_std)
    if sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (batch_size,), device=device)
    u = compute_density_for_timestep_sampling(
        "logit_normal", batch_size, logit_mean, logit_std, device=device
    )
    return (u * num_train_timesteps).long().clamp(max=num_train_timesteps - 1)


def min_snr_weights(snr_t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma (Hang et al. 2023, eq. 8 and §3.4); (B,) -> (B,).

    The paper's weight min(SNR, gamma) is stated for an x0 loss; an eps-MSE equals SNR times the x0-MSE
    and a v-MSE equals (SNR + 1) times it, so those losses are divided by SNR and SNR + 1 respectively.
    """
    _check_prediction_type(prediction_type)
    if gamma <= 0:
        raise ValueError(f"snr_gamma must be > 0, got {gamma}")
    clipped = torch.clamp(snr_t, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr_t
    if prediction_type == "v_prediction":
        return clipped / (snr_t + 1)
    return clipped


def weighted_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    cell_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error per sample (mean over C, H, W; with `cell_weights` (B, 1, H, W), a mean weighted
    by them over H, W), times `weights` (B,) if given, averaged: scalar."""
    error = F.mse_loss(pred.float(), target.float(), reduction="none")
    if cell_weights is None:
        per_sample = error.flatten(1).mean(1)
    else:
        cell_weights = cell_weights.float().expand_as(error)
        per_sample = (error * cell_weights).flatten(1).sum(1) / cell_weights.flatten(1).sum(1)
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()


def reconstruction_loss(
    images: torch.Tensor,
    reconstructions: torch.Tensor,
    kind: Literal["l1", "l2"] = "l1",
    edge_weight: float = 0.0,
) -> torch.Tensor:
    """Mean absolute (l1) or squared (l2) pixel error, images in [-1, 1]: scalar. With `edge_weight` > 0, a
    weighted mean in which pixels on an edge of `images` (`edge_mask`) weigh 1 + edge_weight, others 1: small
    objects are mostly edge, and a plain mean lets a VAE blur a small star's points away for little loss."""
    if kind not in ("l1", "l2"):
        raise ValueError(f"rec_loss must be 'l1' or 'l2', got {kind!r}")
    error = (images - reconstructions).abs() if kind == "l1" else (images - reconstructions).square()
    if not edge_weight:
        return error.mean()
    weights = 1 + edge_weight * edge_mask(images)
    return (error * weights).sum() / (weights.sum() * images.shape[1])


def edge_mask(images: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """1 where some channel of `images` (B, C, H, W) in [-1, 1] spans more than `threshold` within the pixel's
    3x3 neighbourhood (a morphological gradient: both sides of every colour edge), else 0; (B, 1, H, W).
    Latents work the same way, with a threshold in their own units."""
    spread = F.max_pool2d(images, 3, 1, 1) + F.max_pool2d(-images, 3, 1, 1)
    return (spread.amax(1, keepdim=True) > threshold).to(images.dtype)


def edge_cell_weights(
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    edge_weight: float,
    threshold: float,
    max_timestep: int = 0,
    predicted: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cell weights of the diffusion loss, (B, 1, H, W): 1 + `edge_weight` on the outline cells of the clean
    `latents` (`edge_mask`), 1 elsewhere; with `predicted` (the model's own clean latents, `predicted_sample`),
    also on its outline cells, so that an object drawn where there is none weighs as an outline; with
    `max_timestep` > 0, samples noised at `timesteps` >= it weigh every cell 1."""
    mask = edge_mask(latents, threshold)
    if predicted is not None:
        mask = torch.maximum(mask, edge_mask(predicted.detach().to(latents.dtype), threshold))
    if max_timestep:
        mask = mask * (timesteps < max_timestep).to(mask.dtype).view(-1, 1, 1, 1)
    return 1 + edge_weight * mask


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over C, H, W, per sample: (B, C, h, w) -> (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(x_rec))]): scalar."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator (decoder) adversarial loss -E[D(x_rec)]: scalar."""
    return -logits_fake.mean()


def adaptive_disc_weight(
    nll_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Taming-transformers' balance ||d nll / d w|| / (||d g / d w|| + eps), clamped to [0, max_weight],
    w = the decoder's last layer weight; detached scalar (Esser et al. 2021, eq. 7)."""
    (nll_grad,) = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = nll_grad.norm() / (g_grad.norm() + eps)
    return torch.clamp(weight, 0.0, max_weight).detach()
