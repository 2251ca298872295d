"""What `generate` writes (issue 21 items 1 and 3): a read-only output folder is refused before the model
loads, PNGs and grids are written atomically (a failed write leaves no file, no temporary file, and the earlier
file intact), and odd but valid prompts (control and invisible characters, thousands of tokens) work, with the
prompt kept exactly in the PNG record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from pipeline_helpers import tiny

from latentforge import cli
from latentforge.commands.png_record import read_record
from latentforge.models.components import Components


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny().save_pretrained(path)
    return path


def _generate(model, prompt: str, out, *extra: str) -> list[str]:
    return ["generate", prompt, "--model", str(model), "--steps", "1", "--seed", "5", "-o", str(out), *extra]


def _refuse_loading(*args, **kwargs):
    raise AssertionError("the model started loading before the bad input was reported")


def test_a_read_only_output_folder_is_refused_before_the_model_loads(model, tmp_path, capsys, monkeypatch):
    """Tests run as root, for whom every folder is writable: the check asks os.access, as for any user."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    monkeypatch.setattr(Components, "from_pretrained", _refuse_loading)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: str(p) != str(folder) and real(p, mode, **k))
    assert cli.main(_generate(model, "a cat", folder / "sub" / "x.png")) == 2
    err = capsys.readouterr().err
    assert (
        "-o/--output: the folder" in err and "readonly is not writable; choose another output folder" in err
    )
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("images", [1, 2])
def test_a_failing_png_write_leaves_no_file_and_keeps_the_old_one(
    model, tmp_path, monkeypatch, capsys, images
):
    """The encoder dies after writing some bytes (a full disk): no PNG that looks complete, no temporary file,
    and the file that was at the target (--overwrite) is kept; the same run then succeeds."""
    out = tmp_path / "x.png"
    targets = [out] if images == 1 else [tmp_path / "x-0.png", tmp_path / "x-1.png", tmp_path / "x-grid.png"]
    for target in targets:
        target.write_bytes(b"the user's earlier image")
    real_save = PIL.Image.Image.save
    calls = []

    def dying_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == len(targets):  # the last file: the grid when there are several
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n half")
            raise OSError(28, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", dying_save)
    argv = [*_generate(model, "a cat", out), "--overwrite", "--num-images", str(images)]
    assert cli.main(argv) == 2  # one line: what failed, what is intact, the fix
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "No space left" in err and "is unchanged" in err and "free some space" in err
    )
    assert targets[-1].read_bytes() == b"the user's earlier image"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(t.name for t in targets)  # no temporary file
    monkeypatch.setattr(PIL.Image.Image, "save", real_save)
    assert cli.main(argv) == 0
    assert all(PIL.Image.open(t).size[1] == 32 for t in targets)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(t.name for t in targets)


def test_control_and_invisible_characters_draw_the_visible_prompt_and_are_recorded(model, tmp_path):
    odd = "a red\x00 circle\x1b \u202eon a\ufeff blue\u200b square \u2615"
    assert cli.main(_generate(model, odd, tmp_path / "odd.png")) == 0
    assert cli.main(_generate(model, "a red circle on a blue square \u2615", tmp_path / "plain.png")) == 0
    assert read_record(tmp_path / "odd.png").prompt == odd  # the record keeps what the user typed
    odd_pixels, plain_pixels = (np.asarray(PIL.Image.open(tmp_path / f"{n}.png")) for n in ("odd", "plain"))
    assert np.array_equal(odd_pixels, plain_pixels)
    assert cli.main(_generate(model, "a green circle on a blue square \u2615", tmp_path / "other.png")) == 0
    assert not np.array_equal(plain_pixels, np.asarray(PIL.Image.open(tmp_path / "other.png")))


def test_a_prompt_of_thousands_of_tokens_makes_an_image(model, tmp_path):
    prompt = "a red circle, " * 700  # about 3500 tokens
    assert cli.main(_generate(model, prompt, tmp_path / "long.png")) == 0
    assert read_record(tmp_path / "long.png").prompt == prompt
    assert np.asarray(PIL.Image.open(tmp_path / "long.png")).std() > 0


def test_end_to_end_a_bad_input_file_exits_2_with_one_line(tmp_path):
    """As a user's shell sees it (a fresh process): exit code 2, one line on stderr, no traceback, nothing
    written; a cut image and a decompression bomb are both found before torch is imported."""
    (tmp_path / "x.png").write_bytes(b"")
    with PIL.Image.new("1", (1, 1)) as small:
        small.resize((20000, 20000)).save(tmp_path / "bomb.png")
    script = (
        "import sys; from latentforge import cli; code = cli.main(sys.argv[1:]); "
        "print('torch' in sys.modules, file=sys.stderr); sys.exit(code)"
    )
    for image, message in (("x.png", "is not an image file that PIL can read"), ("bomb.png", "too large")):
        argv = ["img2img", "a cat", "--image", str(tmp_path / image), "-o", str(tmp_path / "out.png")]
        run = subprocess.run(
            [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120
        )
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        assert lines[0].startswith("latentforge img2img: error: --image: ") and message in lines[0]
        assert lines[1] == "False"  # torch was never imported
    assert not (tmp_path / "out.png").exists()
