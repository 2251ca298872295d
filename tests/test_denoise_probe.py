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
                "--json", str(table), "--latent-noise", "0", "4"])  # fmt: skip
    report = json.loads(table.read_text())
    results = report["results"]
    low, high = results["100"], results["950"]
    assert low["snr"] > 1 > 0.01 > high["snr"]
    assert low["objects_kept"] >= 0.5 > high["objects_kept"] + 0.3
    # at low noise the latents, not the words, decide the shapes: swapped shape words are not followed
    assert 0 <= low["swapped_followed"] < low["objects_kept"] - 0.3
    assert Image.open(out).size == (4 * 64, 3 * 64)  # scenes + two timesteps, 4 scenes a row
    printed = capsys.readouterr().out
    assert "objects kept" in printed
    # the decoder control: clean latents decode to the scenes; latents drowned in noise (sigma 4, several
    # times the latents' own unit spread) do not
    control = report["decoder_control"]
    assert control["0.0"] >= 0.8 > control["4.0"] + 0.4
    assert "clean latents + 4 * N(0, 1) keep the objects of" in printed


def test_timestep_outside_the_schedule_is_refused(probe, tmp_path):
    with pytest.raises(SystemExit, match=r"timesteps: 1000 is outside \[0, 1000\)"):
        probe.main(["--timesteps", "1000", "--num-scenes", "2", "-o", str(tmp_path / "p.png")])


def test_negative_latent_noise_is_refused_before_loading(probe, tmp_path):
    with pytest.raises(SystemExit, match=r"latent-noise: every sigma must be >= 0, got \[0.1, -0.2\]"):
        probe.main(["--model", str(tmp_path / "absent"), "--latent-noise", "0.1", "-0.2"])


def test_swap_shapes_changes_every_shape_in_scene_and_caption_alike(probe):
    from latentforge.data.shapes import Scene, ShapeObject

    scene = Scene(
        objects=[ShapeObject("star", "red", (0, 0, 20, 20)), ShapeObject("circle", "blue", (30, 30, 50, 50)),
                 ShapeObject("circle", "blue", (0, 30, 16, 46))],
        background="gray",
    )  # fmt: skip
    swapped, words = probe.swap_shapes(scene, "a red star and two blue circles on a gray background")
    assert words == "a red circle and two blue squares on a gray background"
    assert [(o.shape, o.color, o.box) for o in swapped.objects] == [
        ("circle", "red", (0, 0, 20, 20)), ("square", "blue", (30, 30, 50, 50)), ("square", "blue", (0, 30, 16, 46))
    ]  # fmt: skip
    assert swapped.background == "gray" and scene.objects[0].shape == "star"  # the original is unchanged
