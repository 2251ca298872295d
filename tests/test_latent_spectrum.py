"""benchmarks/latent_spectrum.py: the fine share is 0 for smooth signals, 1 for the finest pattern, and ranks a
shipped VAE's latents against the images it encodes."""

from __future__ import annotations

import pytest
import torch
from pipeline_helpers import benchmark_script, one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def spectrum():
    return benchmark_script("latent_spectrum")


def test_fine_share_separates_smooth_from_fine_patterns(spectrum):
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = torch.exp(-((rows - 8) ** 2 + (cols - 7) ** 2) / 20)[None, None]  # a smooth object
    checkers = ((rows + cols) % 2 * 2 - 1)[None, None]
    assert spectrum.fine_share(blob) < 0.05
    assert spectrum.fine_share(checkers) > 0.9
    mixed = torch.cat([blob, checkers], 1)
    assert spectrum.fine_share(blob) < spectrum.fine_share(mixed) < spectrum.fine_share(checkers)
    # each image's own mean (a background colour) is not detail
    assert spectrum.fine_share(blob + 5) == pytest.approx(spectrum.fine_share(blob), abs=1e-6)


def test_prints_a_row_per_model(spectrum, capsys):
    from latentforge.resources import DEFAULT_MODEL

    spectrum.main([str(DEFAULT_MODEL), "--num-scenes", "8"])
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    latents, images = float(row[3]), float(row[4])
    assert row[2].strip() == "16x16x16"
    assert 0 < images < latents < 1  # the shipped latents carry more fine detail than the images at 16x16
