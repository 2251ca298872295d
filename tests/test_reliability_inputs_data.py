"""Training data (issue 21 item 1): unreadable images are the one input that is skipped, and then the run says
how many and which, with the reason, and stops (before the latent cache is written) when they are more than
data.max_corrupt_fraction; a damaged latent cache is built again instead of failing the run."""

from __future__ import annotations

import hashlib
import re

import pytest
from pipeline_helpers import one_thread, random_image  # noqa: F401  (autouse fixture)

from latentforge import cli


def _dataset(folder, bad: dict[int, bytes]):
    """12 captioned images (kohya layout); the images numbered in `bad` hold the given bytes instead."""
    folder.mkdir()
    for i in range(12):
        random_image(i).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"picture number {i}")
    for i, data in bad.items():
        (folder / f"img{i:02d}.png").write_bytes(data)
    return folder


def _hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _train(data, run, *extra: str) -> list[str]:
    return [
        "train",
        "unet",
        "--config",
        "smoke-unet",
        f"data.dataset={data}",
        "data.held_out_fraction=0",
        "optim.max_steps=2",
        "-o",
        str(run),
        *extra,
    ]


def _truncated_png() -> bytes:
    import io

    buffer = io.BytesIO()
    random_image(99).save(buffer, format="PNG")
    return buffer.getvalue()[:300]


def test_two_unreadable_images_of_twelve_are_named_and_left_out(tmp_path, capsys):
    data = _dataset(tmp_path / "data", {3: b"not an image", 7: _truncated_png()})
    before = _hashes(data)
    assert cli.main(_train(data, tmp_path / "run")) == 0
    err = capsys.readouterr().err
    line = next(
        line for line in err.splitlines() if line.startswith("data: 2 of 12 images could not be read")
    )
    assert re.search(r"img03.png \(UnidentifiedImageError: cannot identify image file", line)
    assert re.search(r"img07.png \(OSError: image file is truncated", line)
    assert line.endswith("they are left out of training")
    assert _hashes(data) == before


def test_too_many_unreadable_images_stop_the_run_before_the_cache_is_written(tmp_path, capsys):
    data = _dataset(tmp_path / "data", {i: b"" for i in (0, 2, 4, 6, 8, 10, 11)})
    before = _hashes(data)
    assert cli.main(_train(data, tmp_path / "run", "data.max_corrupt_fraction=0.2")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("latentforge train: error: data: 7 of 12 images could not be read: ")
    assert "img00.png (UnidentifiedImageError" in last and "and 2 more" in last  # the first 5, then a count
    assert "more than data.max_corrupt_fraction=0.2 of them: fix or remove the files" in last
    cache = tmp_path / "run" / "cache"
    assert not cache.exists() or not list(cache.rglob("meta.json"))  # nothing half-cached
    assert not (tmp_path / "run" / "model").exists()
    assert _hashes(data) == before


def test_a_damaged_latent_cache_is_built_again(tmp_path, capsys):
    data = _dataset(tmp_path / "data", {})
    run = tmp_path / "run"
    assert cli.main(_train(data, run)) == 0
    (cache_file,) = run.glob("cache/*/cache.safetensors")
    cache_file.write_bytes(cache_file.read_bytes()[:500])
    capsys.readouterr()
    assert cli.main(_train(data, run, "checkpoint.resume=latest", "optim.max_steps=3")) == 0
    assert re.search(
        r"the latent cache in .* is damaged \(SafetensorError.*\); building it again", capsys.readouterr().err
    )
    assert cache_file.stat().st_size > 500


@pytest.mark.parametrize("fraction", ["-0.1", "1.5"])
def test_max_corrupt_fraction_outside_0_1_is_refused(tmp_path, capsys, fraction):
    assert cli.main(_train(tmp_path / "data", tmp_path / "run", f"data.max_corrupt_fraction={fraction}")) == 2
    assert f"data.max_corrupt_fraction must be in [0, 1] (a share of the images), got {float(fraction)}" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()
