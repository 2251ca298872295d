"""PSNR, SSIM, FID, KID and CLIP score against hand computations; feature spaces and the CLIP loader."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from latentforge import image_metrics
from latentforge.evaluation import features, metrics


def test_psnr_of_known_mse():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8
    assert image_metrics.psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0])  # MSE 0.01 -> 20 dB
    assert image_metrics.psnr(x * 255, x * 255 + 5, data_range=255).tolist() == pytest.approx(
        [20 * math.log10(51)] * 2
    )
    assert torch.isinf(image_metrics.psnr(x, x)).all()
    with pytest.raises(ValueError, match="same shape"):
        image_metrics.psnr(x, x[:1])


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004 Eq. 13 window by window with explicit weighted sums (one channel)."""
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            a, b = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mu_a, mu_b = (w * a).sum(), (w * b).sum()
            var_a, var_b = (w * (a - mu_a) ** 2).sum(), (w * (b - mu_b) ** 2).sum()
            cov = (w * (a - mu_a) * (b - mu_b)).sum()
            values.append(
                ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_window_by_window_computation():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 15, 14, generator=gen)
    y = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    got = image_metrics.ssim(x, y)
    for b in range(2):
        by_hand = np.mean([_ssim_by_hand(x[b, c].numpy(), y[b, c].numpy()) for c in range(3)])
        assert got[b].item() == pytest.approx(by_hand, abs=1e-10)
    assert got.min() > 0.2 and got.max() < 0.95  # a real, partial similarity


def test_ssim_identical_and_constant_images():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert image_metrics.ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    # flat images: no variance, so SSIM is the luminance term (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.6, 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert image_metrics.ssim(
        torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b)
    ).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 11 px"):
        image_metrics.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_frechet_distance_hand_cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # b = 2a + 3: S_b = 4 S_a, so Tr(S_a + S_b - 2 (S_a S_b)^1/2) = Tr(S_a + 4 S_a - 4 S_a) = Tr(S_a)
    b = 2 * a + 3
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(np.cov(a, rowvar=False))
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert metrics.frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2
    x, y = rng.normal(1, 2, size=(500, 1)), rng.normal(-1, 0.5, size=(400, 1))
    one_d = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert metrics.frechet_distance(torch.from_numpy(x), y) == pytest.approx(one_d, rel=1e-9)
    with pytest.raises(ValueError, match="feature sizes differ"):
        metrics.frechet_distance(a, a[:, :3])


@pytest.mark.parametrize("n, m, dim", [(30, 20, 50), (200, 150, 6)])
def test_trace_sqrt_product_both_routes_match_scipy_sqrtm(n, m, dim):
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(n, dim)), rng.normal(size=(m, dim)) @ rng.normal(size=(dim, dim))
    expected = np.trace(sqrtm(a.T @ a @ b.T @ b)).real
    assert metrics.trace_sqrt_product(a, b) == pytest.approx(expected, rel=1e-6)


def test_kid_unbiased_mmd_matches_double_loop():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 4)), rng.normal(0.5, 1, size=(6, 4))

    def k(x, y):
        return (x @ y / 4 + 1) ** 3

    m = 6
    within = sum(k(a[i], a[j]) + k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / m**2
    assert metrics.polynomial_mmd2(a, b) == pytest.approx(within - 2 * cross, rel=1e-12)
    mean, std = metrics.kernel_inception_distance(a, b, num_subsets=3, subset_size=100)
    assert mean == pytest.approx(within - 2 * cross, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two(monkeypatch):
    rng = np.random.default_rng(2)
    same = [metrics.kernel_inception_distance(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)), 5, 50)[0]]
    same += [
        metrics.kernel_inception_distance(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)), 5, 50)[0]
    ]
    shifted, _ = metrics.kernel_inception_distance(
        rng.normal(size=(100, 8)), rng.normal(0.5, 1, size=(100, 8)), 5, 50
    )
    assert shifted > 0.1
    assert max(abs(v) for v in same) < 0.1 * shifted
    # the subset-by-subset path of large sets gives the same numbers as the all-at-once path
    a, b = rng.normal(size=(60, 8)), rng.normal(0.2, 1, size=(50, 8))
    all_at_once = metrics.kernel_inception_distance(a, b, 7, 30, seed=1)
    monkeypatch.setattr(metrics, "KID_FULL_KERNEL_MAX", 0)
    assert metrics.kernel_inception_distance(a, b, 7, 30, seed=1) == pytest.approx(all_at_once, rel=1e-12)
    with pytest.raises(ValueError, match="num_subsets"):
        metrics.kernel_inception_distance(np.zeros((4, 2)), np.zeros((4, 2)), num_subsets=0)


def test_clip_score_of_known_angles():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    text = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, math.sqrt(3)]])
    assert metrics.clip_score(image, text).tolist() == pytest.approx([100.0, 0.0, 0.0, 50.0])


def _tiny_open_clip(tmp_path):
    """A tiny random open_clip model saved in open_clip's folder format (config json + safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg)
    # the layout of the CLIP trainer's export: <output_dir>/model/open_clip/
    folder = tmp_path / "model" / "open_clip"
    folder.mkdir(parents=True)
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic"}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess})
    )
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    return model, folder.parent


def test_clip_encoder_loads_open_clip_folder_and_tokenizes_like_open_clip(tmp_path):
    import open_clip

    model, folder = _tiny_open_clip(tmp_path)
    encoder = features.ClipEncoder.from_pretrained(folder)
    texts = ["a red circle above a blue star", "two green squares"]
    ids = encoder.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids
    assert torch.equal(ids, open_clip.tokenize(texts, context_length=16))
    with torch.no_grad():
        expected = model.eval().encode_text(ids, normalize=True)
    assert torch.allclose(encoder.encode_texts(texts), expected, atol=1e-6)
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "white")]
    embeds = encoder.encode_images(images)
    # the folder's preprocess_cfg is used: pixels mapped to [-1, 1] with mean = std = 0.5
    colors = torch.tensor([[255.0, 0, 0], [0, 0, 255], [255, 255, 255]]) / 255 * 2 - 1
    with torch.no_grad():
        expected = model.encode_image(colors[:, :, None, None].expand(3, 3, 32, 32), normalize=True)
    assert torch.allclose(embeds, expected, atol=1e-5)
    assert features.feature_extractor("auto", clip=encoder) is encoder
    assert encoder(images).shape == (3, 16) and "open_clip" in encoder.name
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        features.ClipEncoder.from_pretrained(tmp_path)


def test_feature_space_selection(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    pixels = features.feature_extractor("auto")
    assert isinstance(pixels, features.PixelFeatures) and pixels.name == "pixels 16x16"
    feats = pixels([Image.new("RGB", (64, 64), (255, 0, 0))] * 2)
    assert feats.shape == (2, 768) and feats[0, :3].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        features.feature_extractor("inception")
    with pytest.raises(ValueError, match="needs a CLIP"):
        features.feature_extractor("clip")
    with pytest.raises(ValueError, match="feature space must be one of"):
        features.feature_extractor("dino")
    assert features.lpips_metric() is None  # no LPIPS weights offline


def test_inception_is_used_when_its_weights_are_in_the_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import inception_v3

    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # random weights in torchvision's file format stand in for the real ones (not available offline)
    state = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    torch.save(state, checkpoints / "inception_v3_google-0cc3c7bd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    extractor = features.feature_extractor("auto")
    assert isinstance(extractor, features.InceptionFeatures) and "inception" in extractor.name
    assert extractor([Image.new("RGB", (32, 32), "red")] * 2).shape == (2, 2048)
