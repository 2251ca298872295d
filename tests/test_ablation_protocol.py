"""benchmarks/ablation.py, the default model's ablation protocol, at a tiny size: a variant architecture, the
budget turned into steps, a resumable run, the scores of every seed, one table row per run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pipeline_helpers import benchmark_script


@pytest.fixture(scope="module")
def ablation():
    return benchmark_script("ablation")


def test_overrides_split_into_training_and_unet_keys(ablation):
    train, unet = ablation.split_overrides(["optim.learning_rate=1e-3", "unet.layers_per_block=3"])
    assert train == ["optim.learning_rate=1e-3"] and unet == {"layers_per_block": 3}
    with pytest.raises(SystemExit, match="must be JSON"):
        ablation.split_overrides(["unet.down_block_types=[oops"])
    with pytest.raises(SystemExit, match="not KEY=VALUE"):
        ablation.split_overrides(["learning_rate"])


def test_variant_architecture_changes_only_the_given_unet_keys(ablation, tmp_path):
    assert ablation.variant_architecture("tiny", {}, tmp_path / "a") == "tiny"
    folder = Path(ablation.variant_architecture("tiny", {"layers_per_block": 3}, tmp_path / "a"))
    from latentforge.resources import architecture_dir

    original = json.loads((architecture_dir("tiny") / "unet" / "config.json").read_text())
    changed = json.loads((folder / "unet" / "config.json").read_text())
    assert changed == original | {"layers_per_block": 3} and original["layers_per_block"] != 3
    assert (folder / "vae" / "config.json").read_bytes() == (
        architecture_dir("tiny") / "vae/config.json"
    ).read_bytes()
    with pytest.raises(SystemExit, match="layers_per_blok.*parameters of diffusers' UNet2DConditionModel"):
        ablation.variant_architecture("tiny", {"layers_per_blok": 3}, tmp_path / "b")
    # a parameter of the diffusers class that the architecture's file leaves at its default is accepted
    pooled = Path(ablation.variant_architecture("tiny", {"addition_embed_type": "text"}, tmp_path / "c"))
    assert "addition_embed_type" not in original
    assert json.loads((pooled / "unet" / "config.json").read_text())["addition_embed_type"] == "text"


def test_the_speed_probe_times_each_variant_on_its_own_shapes(ablation, tmp_path):
    """The probe runs the variant's own U-Net (here 8 input channels at another width) beside the baseline and
    returns their speed ratio; the same architecture is 1.0 without timing anything. How fast a variant is
    is the benchmark's to measure, not a test's."""
    wide = ablation.variant_architecture(
        "tiny", {"block_out_channels": [64, 128], "in_channels": 8}, tmp_path / "w"
    )
    assert ablation.speed_ratio("tiny", "tiny", 4, 1) == 1.0
    ratio = ablation.speed_ratio("tiny", wide, 2, 1)
    assert math.isfinite(ratio) and ratio > 0
    assert math.isfinite(ablation.speed_ratio("tiny", wide, 2, 1, train_text_encoder=True))


@pytest.mark.parametrize("train_text_encoder", [False, True])
def test_the_probe_step_trains_the_text_encoder_only_when_the_row_does(ablation, train_text_encoder):
    """A row that trains its text encoder pays for its forward and backward in every step, so the probe's step
    does too; a frozen one is cached by the trainer, so the probe computes its output once. The caption is as
    long as the tokenizer pads it in training, since cross-attention costs grow with it."""
    step = ablation.ProbeStep("tiny", 2, train_text_encoder)
    assert step.ids.shape == (2, 77)
    assert step() > 0
    assert all(p.grad is not None for p in step.unet.parameters() if p.requires_grad)
    text_grads = [p.grad is not None for p in step.text_encoder.parameters()]
    assert text_grads and all(g == train_text_encoder for g in text_grads)


def test_a_row_trains_scores_every_seed_resumes_and_appends(ablation, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    table = tmp_path / "table.md"
    argv = [
        "tiny-row", "--config", "smoke-unet", "--architecture", "tiny", "--minutes", "0.01", "--baseline-rate",
        "20", "--seeds", "0", "1", "--num-prompts", "1", "--images-per-prompt", "1", "--runs",
        str(tmp_path / "runs"), "--table", str(table), "vae_from=", "text_encoder_from=", "unet.layers_per_block=2",
    ]  # fmt: skip
    ablation.main(argv)
    run = tmp_path / "runs" / "tiny-row"
    result = json.loads((run / "scores.json").read_text())
    assert result["steps"] >= 1 and (run / "train" / "model" / "model_index.json").is_file()
    unet = json.loads((run / "train" / "model" / "unet" / "config.json").read_text())
    assert unet["layers_per_block"] == 2
    for seed in (0, 1):
        assert (run / f"eval-seed{seed}" / "compositional.json").is_file()
    assert 0.0 <= result["scores"]["in_distribution/overall"] <= 1.0
    trained = (run / "train" / "model" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    rerun = [*argv]
    rerun[rerun.index("--baseline-rate") + 1] = "2000"  # a new budget must not change a planned run
    ablation.main(rerun)  # done already: no new training, no second row
    assert (
        run / "train" / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    ).stat().st_mtime_ns == trained
    assert json.loads((run / "scores.json").read_text())["steps"] == result["steps"]
    rows = [line for line in table.read_text().splitlines() if line.startswith("| tiny-row |")]
    assert (
        len(rows) == 1
        and "unet.layers_per_block=2" in rows[0]
        and "benchmarks/ablation.py tiny-row" in rows[0]
    )


def test_a_planned_row_keeps_its_steps_under_another_budget(ablation, tmp_path, monkeypatch):
    """A row stopped after its plan was made (the budget turned into steps) keeps that plan when given again
    with another budget: the same steps, so the same learning-rate schedule for the resumed run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "runs" / "stopped"
    run.mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps({"steps": 3, "rate": 10.0, "ratio": 1.0}))
    argv = [
        "stopped", "--config", "smoke-unet", "--architecture", "tiny", "--minutes", "5", "--seeds", "0",
        "--num-prompts", "1", "--images-per-prompt", "1", "--runs", str(tmp_path / "runs"), "--table",
        str(tmp_path / "table.md"), "vae_from=", "text_encoder_from=",
    ]  # fmt: skip
    ablation.main(argv)
    assert json.loads((run / "scores.json").read_text())["steps"] == 3
    card = (run / "train" / "model" / "README.md").read_text()
    assert "max_steps: 3" in card
