"""benchmarks/denoise_probe.py: the one-step clean-image prediction of the shipped model keeps the scenes'
objects at low noise and loses them at high noise; its grid has a row of scenes and one per timestep."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from pipeline_helpers import benchmark_script, one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def probe():
    return benchmark_script("denoise_probe")


def test_shipped_model_keeps_objects_at_low_noise_only(probe, tmp_path, capsys):
    out, table = tmp_path / "probe.png", tmp_path / "probe.json"
    probe.main(["--timesteps", "100", "950", "--num-scenes", "16", "--grid-scenes", "4", "-o", str(out),
                "--json", str(table)])  # fmt: skip
    results = json.loads(table.read_text())["results"]
    low, high = results["100"], results["950"]
    assert low["snr"] > 1 > 0.01 > high["snr"]
    assert low["objects_kept"] >= 0.5 > high["objects_kept"] + 0.3
    assert Image.open(out).size == (4 * 64, 3 * 64)  # scenes + two timesteps, 4 scenes a row
    assert "objects kept" in capsys.readouterr().out


def test_timestep_outside_the_schedule_is_refused(probe, tmp_path):
    with pytest.raises(SystemExit, match=r"timesteps: 1000 is outside \[0, 1000\)"):
        probe.main(["--timesteps", "1000", "--num-scenes", "2", "-o", str(tmp_path / "p.png")])
