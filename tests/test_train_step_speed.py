"""benchmarks/train_step_speed.py: each variant's switch reaches the timed step, the first variant is the
reference, and a bad variant is refused before any model is built."""

from __future__ import annotations

import json

import pytest
import torch
from pipeline_helpers import benchmark_script, one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def speed():
    return benchmark_script("train_step_speed")


def test_switches_reach_the_step(speed):
    eager = speed.make_step("eager", "tiny", 2, train_text_encoder=True)
    last = speed.make_step("channels-last", "tiny", 2, train_text_encoder=True)
    assert last.latents.is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in last.unet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    short = speed.make_step("tokens-8", "tiny", 2, train_text_encoder=False)
    assert short.ids.shape == (2, 8) and short.context.shape[1] == 8
    assert eager.ids.shape[1] == eager.text_encoder.config.max_position_embeddings > 8


def test_reports_every_variant_against_the_first(speed, tmp_path, capsys):
    out = tmp_path / "speed.json"
    speed.main(["--architecture", "tiny", "--batch-size", "2", "--steps", "1", "--blocks", "2",
                "--variants", "eager", "tokens-8", "--json", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    results = report["results"]
    assert list(results) == ["eager", "tokens-8"] and report["threads"] == 1
    assert results["eager"]["ratio"] == 1.0
    for r in results.values():
        assert r["samples_per_s"] == pytest.approx(2 / r["median_step_s"])
        assert r["first_step_s"] > 0
    assert results["tokens-8"]["ratio"] == pytest.approx(
        results["eager"]["median_step_s"] / results["tokens-8"]["median_step_s"]
    )
    assert "tokens-8" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("variants", "message"),
    [(["eager", "bf16"], "unknown variant 'bf16'"), (["tokens-0"], "unknown variant 'tokens-0'"),
     (["eager", "eager"], "each variant once")],
)  # fmt: skip
def test_bad_variants_are_refused_before_any_work(speed, variants, message, capsys):
    with pytest.raises(SystemExit):
        speed.main(["--architecture", "absent", "--variants", *variants])
    assert message in capsys.readouterr().err


def test_more_tokens_than_the_tokenizer_has_is_refused(speed):
    with pytest.raises(SystemExit, match="tokens-500: the tokenizer's captions have at most"):
        speed.make_step("tokens-500", "tiny", 2, train_text_encoder=True)
