"""Loss math of the trainers against values computed by hand (and against diffusers where it has one)."""

import math

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from latentforge.training import losses


def test_eps_and_sample_targets_are_noise_and_latents():
    latents, noise = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), -1.0)
    a = torch.tensor([0.64])
    assert losses.diffusion_target(latents, noise, a, "epsilon").item() == -1.0
    assert losses.diffusion_target(latents, noise, a, "sample").item() == 2.0


def test_v_target_by_hand():
    # a = 0.64: sqrt(a) = 0.8, sqrt(1 - a) = 0.6; v = 0.8 * (-1) - 0.6 * 2 = -2.0
    v = losses.diffusion_target(
        torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), -1.0), torch.tensor([0.64]), "v_prediction"
    )
    assert v.item() == pytest.approx(-2.0)


def test_v_target_matches_diffusers_get_velocity():
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    t = torch.tensor([0, 500, 999])
    ours = losses.diffusion_target(latents, noise, scheduler.alphas_cumprod[t], "v_prediction")
    torch.testing.assert_close(ours, scheduler.get_velocity(latents, noise, t))


def test_snr_by_hand_and_against_diffusers():
    assert losses.snr(torch.tensor([0.8])).item() == pytest.approx(4.0)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([1, 10, 999])
    torch.testing.assert_close(losses.snr(scheduler.alphas_cumprod[t]), compute_snr(scheduler, t))


def test_min_snr_weights_by_hand():
    snr = torch.tensor([1.0, 4.0, 10.0])
    # eps: min(snr, 5) / snr
    torch.testing.assert_close(losses.min_snr_weights(snr, 5.0, "epsilon"), torch.tensor([1.0, 1.0, 0.5]))
    # v: min(snr, 5) / (snr + 1)
    torch.testing.assert_close(
        losses.min_snr_weights(snr, 5.0, "v_prediction"), torch.tensor([0.5, 0.8, 5 / 11])
    )
    # x0: min(snr, 5)
    torch.testing.assert_close(losses.min_snr_weights(snr, 5.0, "sample"), torch.tensor([1.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="prediction_type"):
        losses.min_snr_weights(snr, 5.0, "flow")
    with pytest.raises(ValueError, match="snr_gamma"):
        losses.min_snr_weights(snr, 0.0, "epsilon")


def test_weighted_mse_by_hand():
    pred = torch.tensor([[1.0, 3.0], [0.0, 0.0]]).reshape(2, 2, 1, 1)
    target = torch.zeros(2, 2, 1, 1)
    # per-sample MSE: (1 + 9) / 2 = 5 and 0; weights 0.5 and 7 -> mean(2.5, 0) = 1.25
    assert losses.weighted_mse(pred, target, torch.tensor([0.5, 7.0])).item() == pytest.approx(1.25)
    assert losses.weighted_mse(pred, target).item() == pytest.approx(2.5)


def test_weighted_mse_with_cell_weights_by_hand():
    # one sample, 2 channels, 1x2 cells; squared errors: channel 0 (4, 0), channel 1 (0, 2)
    pred = torch.tensor([[[[2.0, 0.0]], [[0.0, math.sqrt(2.0)]]]])
    target = torch.zeros_like(pred)
    cells = torch.tensor([[[[3.0, 1.0]]]])  # (B, 1, H, W): the first cell weighs 3
    # (3 * 4 + 1 * 0 + 3 * 0 + 1 * 2) / (3 + 1 + 3 + 1) = 14 / 8
    assert losses.weighted_mse(pred, target, cell_weights=cells).item() == pytest.approx(14 / 8)
    # equal cell weights are the plain mean, whatever their size; per-sample weights still multiply
    plain = losses.weighted_mse(pred, target, torch.tensor([2.0]))
    assert losses.weighted_mse(pred, target, torch.tensor([2.0]), torch.full_like(cells, 5.0)) == plain


def test_edge_mask_marks_both_sides_of_an_outline_in_latents():
    latents = torch.zeros(1, 4, 8, 8)
    latents[0, 2, 2:5, 2:5] = 3.0  # a 3x3 "object" in one channel of a flat latent
    mask = losses.edge_mask(latents, threshold=1.5)[0, 0]
    assert mask.shape == (8, 8)
    # the 3x3 neighbourhood of every cell within one cell of the object's border spans 3.0: a 5x5 band
    # less the object's centre cell, whose neighbourhood is all object
    expected = torch.zeros(8, 8)
    expected[1:6, 1:6] = 1
    expected[3, 3] = 0
    assert torch.equal(mask, expected)
    assert not losses.edge_mask(latents, threshold=3.5).any()  # a threshold above the step marks nothing


def test_edge_cell_weights_only_below_the_max_timestep():
    latents = torch.zeros(2, 4, 8, 8)
    latents[:, 2, 2:5, 2:5] = 3.0
    edges = losses.edge_mask(latents, threshold=1.5)
    t = torch.tensor([100, 700])
    every = losses.edge_cell_weights(latents, t, 9.0, 1.5)  # max_timestep 0: every timestep
    assert torch.equal(every, 1 + 9 * edges)
    low = losses.edge_cell_weights(latents, t, 9.0, 1.5, max_timestep=500)
    assert torch.equal(low[0], every[0])  # t = 100 < 500: the outline weighs 10
    assert torch.equal(low[1], torch.ones(1, 8, 8))  # t = 700: every cell weighs 1


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predicted_sample_matches_diffusers_pred_original_sample(prediction_type):
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,  # diffusers clips x0 to [-1, 1] by default; the loss uses it unclipped
    )
    g = torch.Generator().manual_seed(0)
    noisy, pred = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g)
    for t in (0, 500, 999):
        ours = losses.predicted_sample(noisy, pred, scheduler.alphas_cumprod[[t]], prediction_type)
        theirs = scheduler.step(pred, t, noisy, generator=g).pred_original_sample
        torch.testing.assert_close(ours, theirs)


def test_edge_cell_weights_also_weigh_the_predicted_outlines():
    latents = torch.zeros(1, 4, 8, 8)
    latents[0, 2, 1:3, 1:3] = 3.0  # the object that is there: outline band rows/columns 0-3
    predicted = latents.clone()
    predicted[0, 0, 6, 6] = -2.0  # a blob the model drew on the background: band rows/columns 5-7
    cells = losses.edge_cell_weights(latents, torch.tensor([999]), 4.0, 1.5, predicted=predicted)[0, 0]
    expected = torch.ones(8, 8)
    expected[0:4, 0:4] = 5
    expected[5:8, 5:8] = 5
    assert torch.equal(cells, expected)
    assert torch.equal(
        losses.edge_cell_weights(latents, torch.tensor([999]), 4.0, 1.5, predicted=latents),
        losses.edge_cell_weights(latents, torch.tensor([999]), 4.0, 1.5),
    )


def test_kl_divergence_by_hand():
    # one latent value: mean 1, logvar 0 -> 0.5 * (1 + 1 - 1 - 0) = 0.5; mean 0, logvar log 2 -> 0.5 * (2 - 1 - ln 2)
    mean = torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1)
    logvar = torch.tensor([0.0, math.log(2.0)]).reshape(2, 1, 1, 1)
    kl = losses.kl_divergence(mean, logvar)
    torch.testing.assert_close(kl, torch.tensor([0.5, 0.5 * (1 - math.log(2.0))]))
    # summed over C, H, W: 4 identical entries give 4x
    assert losses.kl_divergence(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(2.0)
    # agrees with diffusers' DiagonalGaussianDistribution.kl()
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    params = torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    dist = DiagonalGaussianDistribution(params)
    torch.testing.assert_close(losses.kl_divergence(dist.mean, dist.logvar), dist.kl())


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5])  # relu(1 - x) = 0, 0.5 -> mean 0.25
    fake = torch.tensor([-2.0, 0.0])  # relu(1 + x) = 0, 1 -> mean 0.5
    assert losses.hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.5))
    assert losses.hinge_g_loss(fake).item() == pytest.approx(1.0)


def test_adaptive_disc_weight_by_hand():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = 3.0 * w.sum()  # gradient (3, 3): norm 3 * sqrt(2)
    g = w.sum()  # gradient (1, 1): norm sqrt(2)
    weight = losses.adaptive_disc_weight(nll, g, w)
    assert weight.item() == pytest.approx(3 * math.sqrt(2) / (math.sqrt(2) + 1e-4), rel=1e-6)
    assert not weight.requires_grad
    assert losses.adaptive_disc_weight(1e9 * w.sum(), g, w).item() == pytest.approx(1e4)  # clamped


def test_reconstruction_losses_by_hand():
    x, y = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, -3.0]]]])
    assert losses.reconstruction_loss(x, y, "l1").item() == pytest.approx(2.0)
    assert losses.reconstruction_loss(x, y, "l2").item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="rec_loss"):
        losses.reconstruction_loss(x, y, "huber")


def test_edge_weighted_reconstruction_loss_by_hand():
    # a 1x4 image with one colour edge between pixels 1 and 2: pixels 0 and 3 are flat, 1 and 2 on the edge
    x = torch.tensor([[[[-1.0, -1.0, 1.0, 1.0]]]])
    assert losses.edge_mask(x).flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert losses.edge_mask(x + 0.01 * torch.tensor([0, 1, 0, 1.0])).sum() == 2  # tiny wiggles are no edge
    y = x + torch.tensor([[[[1.0, 0.0, 2.0, 0.0]]]])  # errors 1 off the edge, 2 on it
    assert losses.reconstruction_loss(x, y, "l1", edge_weight=0.0) == pytest.approx(3 / 4)
    # weights 1, 4, 4, 1: (1 * 1 + 4 * 2) / 10
    assert losses.reconstruction_loss(x, y, "l1", edge_weight=3.0).item() == pytest.approx(9 / 10)
    assert losses.reconstruction_loss(x, y, "l2", edge_weight=3.0).item() == pytest.approx((1 + 4 * 4) / 10)
    # channels: a pixel is on an edge if any channel has one; the mean runs over channels too
    rgb = torch.cat([x, torch.zeros_like(x), torch.zeros_like(x)], dim=1)
    assert losses.edge_mask(rgb).shape == (1, 1, 1, 4) and losses.edge_mask(rgb).sum() == 2
    assert losses.reconstruction_loss(rgb, rgb + 1, "l1", edge_weight=3.0).item() == pytest.approx(1.0)


def test_logit_normal_timesteps_favour_the_middle_of_the_schedule():
    torch.manual_seed(0)
    uniform = losses.sample_timesteps(20000, 1000)
    logit = losses.sample_timesteps(20000, 1000, "logit_normal")
    assert int(logit.min()) >= 0 and int(logit.max()) <= 999 and logit.dtype == torch.int64

    def middle(t):
        return ((t >= 300) & (t < 700)).float().mean().item()

    # P(|N(0, 1)| < logit(0.7) = 0.847) = 0.60 against 0.40 for uniform timesteps
    assert middle(uniform) == pytest.approx(0.40, abs=0.02)
    assert middle(logit) == pytest.approx(0.60, abs=0.02)
    # the mean of the logit moves the mode: sigmoid(1) = 0.73
    shifted = losses.sample_timesteps(20000, 1000, "logit_normal", logit_mean=1.0)
    assert shifted.float().median().item() == pytest.approx(731, abs=15)
    with pytest.raises(ValueError, match="timestep_sampling"):
        losses.sample_timesteps(4, 1000, "lognormal")
