"""benchmarks/vae_ablation.py, the VAE ablation protocol, at a tiny size: a variant architecture with only the
given VAE keys changed, a trained and scored row with its command, a rerun that neither trains nor scores again
nor adds the row twice, and a resume from the last checkpoint."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import pytest
from pipeline_helpers import benchmark_script


@pytest.fixture(scope="module")
def protocol():
    return benchmark_script("vae_ablation")


def test_overrides_split_into_training_and_vae_keys(protocol):
    train, vae = protocol.split_overrides(["loss.disc_start=9", "vae.latent_channels=8", "model=tiny"])
    assert train == ["loss.disc_start=9", "model=tiny"] and vae == {"latent_channels": 8}
    with pytest.raises(SystemExit, match="must be JSON"):
        protocol.split_overrides(["vae.block_out_channels=[32"])
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        protocol.split_overrides(["latent_channels"])


def test_variant_architecture_changes_only_the_given_vae_keys(protocol, tmp_path):
    from latentforge.resources import architecture_dir

    assert protocol.variant_architecture("tiny", "vae", {}, tmp_path / "a") == "tiny"
    folder = Path(protocol.variant_architecture("tiny", "vae", {"latent_channels": 8}, tmp_path / "a"))
    source = architecture_dir("tiny")
    original = json.loads((source / "vae" / "config.json").read_text())
    assert json.loads((folder / "vae" / "config.json").read_text()) == original | {"latent_channels": 8}
    assert original["latent_channels"] != 8
    others = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    others.remove(Path("vae/config.json"))
    assert others and sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()) == sorted(
        [*others, Path("vae/config.json")]
    )
    assert all(filecmp.cmp(source / p, folder / p, shallow=False) for p in others)
    with pytest.raises(SystemExit, match="not_a_key"):
        protocol.variant_architecture("tiny", "vae", {"not_a_key": 1}, tmp_path / "b")


def test_row_trains_scores_appends_and_resumes(protocol, tmp_path, monkeypatch):
    table = tmp_path / "table.md"
    argv = ["tiny", "vae.latent_channels=2", "optim.max_steps=2", "--config", "smoke-vae"]
    argv += ["--num-images", "3", "--runs", str(tmp_path / "runs"), "--table", str(table)]
    protocol.main(argv)
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "train" / "model" / "vae" / "config.json").read_text())["latent_channels"] == 2
    rows = [line for line in table.read_text().splitlines() if line.startswith("| tiny |")]
    assert table.read_text().startswith(protocol.TABLE_HEAD) and len(rows) == 1
    assert "`python benchmarks/vae_ablation.py tiny vae.latent_channels=2 optim.max_steps=2" in rows[0]
    assert "| 2 | 8 |" in rows[0]  # 2 steps of 4 images

    calls = []
    monkeypatch.setattr(protocol, "latentforge", lambda *args: calls.append(args))
    protocol.main(argv)  # trained and scored already: nothing runs, no second row
    assert calls == [] and table.read_text().count("| tiny |") == 1

    shutil.rmtree(run / "train" / "model")  # as if stopped after its last checkpoint
    with pytest.raises(FileNotFoundError):  # the stand-in trainer exports nothing
        protocol.main(argv)
    assert calls[0][:4] == ("train", "vae", "--config", "smoke-vae")
    assert calls[0][-1] == "checkpoint.resume=latest" and f"model={run / 'architecture'}" in calls[0]
