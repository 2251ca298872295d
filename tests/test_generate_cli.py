"""`latentforge generate | img2img | inpaint`: files, seeds, metadata and `--from-png` regeneration."""

import json
import re
import shutil

import numpy as np
import PIL.Image
import pytest
from pipeline_helpers import (
    box_mask,
    one_thread,  # noqa: F401  (autouse fixture)
    random_image,
    tiny,
)

from latentforge import cli
from latentforge.commands import generate, shared_flags
from latentforge.commands.png_record import (
    GenerationRecord,
    a1111_parameters,
    parse_a1111_parameters,
    read_record,
)
from latentforge.pipelines.image_inputs import blur_mask, to_tensor


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny"
    tiny().save_pretrained(path)
    return path


def _pixels(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB"))


def test_generate_saves_each_image_with_its_seed_and_a_grid(model, tmp_path, capsys):
    out = tmp_path / "out.png"
    args = [
        "generate",
        "a (red:1.2) circle",
        "-o",
        str(out),
        "--model",
        str(model),
        "--steps",
        "2",
        "--seed",
        "40",
    ]
    assert cli.main([*args, "--num-images", "2", "--scheduler", "euler-a"]) == 0
    first, second, grid = (tmp_path / f"out-{s}.png" for s in ("0", "1", "grid"))
    assert PIL.Image.open(grid).size == (64, 32)
    record = read_record(second)
    assert (record.seed, record.num_images, record.scheduler, record.prompt) == (
        41,
        1,
        "euler-a",
        "a (red:1.2) circle",
    )
    assert record.model == "tiny" and len(record.model_hash) == 12  # the folder's name, not its path
    text = PIL.Image.open(second).text["parameters"]
    assert text.startswith(
        "a (red:1.2) circle\nSteps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 41, Size: 32x32"
    )
    assert "saved " + str(first) in capsys.readouterr().out  # one line per file

    # Image i depends on its seed only: --seed 41 alone makes image 1 again; --from-png does too.
    assert cli.main(["generate", "a (red:1.2) circle", "-o", str(tmp_path / "alone.png"), "--model", str(model),
                     "--steps", "2", "--seed", "41", "--scheduler", "euler-a"]) == 0  # fmt: skip
    again = ["generate", "--from-png", str(second), "-o", str(tmp_path / "again.png")]
    assert cli.main(again) == 2  # the record names the model "tiny": no such folder here
    assert "was made with the model 'tiny'" in capsys.readouterr().err
    assert cli.main([*again, "--model", str(model)]) == 0
    np.testing.assert_array_equal(_pixels(tmp_path / "alone.png"), _pixels(second))
    np.testing.assert_array_equal(_pixels(tmp_path / "again.png"), _pixels(second))
    assert not np.array_equal(_pixels(first), _pixels(second))


def test_existing_output_needs_overwrite(model, tmp_path, capsys):
    out = tmp_path / "taken.png"
    out.write_bytes(b"keep me")
    args = ["generate", "a cat", "-o", str(out), "--model", str(model), "--steps", "1"]
    assert cli.main(args) == 2
    assert "output exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert cli.main([*args, "--overwrite"]) == 0
    assert read_record(out).prompt == "a cat"


def test_inpaint_from_png_regenerates_the_image(model, tmp_path):
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    random_image(3).save(image)
    box_mask().save(mask)
    out = tmp_path / "inpainted.png"
    args = [
        "inpaint",
        "a star",
        "-o",
        str(out),
        "--model",
        str(model),
        "--image",
        str(image),
        "--mask",
        str(mask),
    ]
    assert cli.main([*args, "--steps", "3", "--strength", "0.7", "--mask-blur", "1", "--seed", "5"]) == 0
    record = read_record(out)
    assert (record.task, record.strength, record.mask_blur) == ("inpaint", 0.7, 1.0)
    assert record.image == "in.png"  # a name: found again beside the PNG
    again = ["inpaint", "--from-png", str(out), "-o", str(tmp_path / "again.png"), "--model", str(model)]
    assert cli.main(again) == 0
    np.testing.assert_array_equal(_pixels(tmp_path / "again.png"), _pixels(out))
    keep = blur_mask(to_tensor(box_mask(), "mask", 1), 1.0)[0, 0].numpy() == 0
    assert keep.sum() > 500
    np.testing.assert_array_equal(_pixels(out)[keep], _pixels(image)[keep])  # paste-back


def test_img2img_from_png_with_an_override(model, tmp_path):
    image = tmp_path / "in.png"
    random_image(4).save(image)
    out = tmp_path / "i2i.png"
    args = [
        "img2img",
        "a square",
        "-o",
        str(out),
        "--model",
        str(model),
        "--image",
        str(image),
        "--steps",
        "4",
    ]
    assert cli.main([*args, "--seed", "9"]) == 0
    assert read_record(out).strength == 0.75  # the fallback default (the model has no generation_defaults)
    again = ["img2img", "--from-png", str(out), "-o", str(tmp_path / "b.png"), "--model", str(model)]
    assert cli.main([*again, "--strength", "0.5"]) == 0
    assert read_record(tmp_path / "b.png").strength == 0.5
    assert not np.array_equal(_pixels(tmp_path / "b.png"), _pixels(out))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "a cat", "--size", "33x32"], "multiples of 2"),
        (["generate", "a cat", "--size", "big"], "--size must be WIDTHxHEIGHT"),
        (["generate"], "give a PROMPT"),
        (["img2img", "a cat"], "--image is required"),
        (["inpaint", "a cat", "--image", "IMAGE"], "--mask is required"),
        (["img2img", "a cat", "--image", "missing.png"], "--image: file .*missing.png does not exist"),
        (["generate", "a cat", "--steps", "0"], "steps must be an integer >= 1, got 0"),
        (
            ["img2img", "a cat", "--image", "IMAGE", "--strength", "1.5"],
            r"strength must be a number in \(0.0, 1.0\]",
        ),
    ],
)
def test_bad_arguments_give_one_line_errors(model, tmp_path, capsys, argv, message):
    random_image().save(tmp_path / "image.png")
    argv = [a.replace("IMAGE", str(tmp_path / "image.png")) for a in argv]
    assert cli.main([*argv, "-o", str(tmp_path / "x.png"), "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # loading progress bars may come first
    assert last.startswith(f"latentforge {argv[0]}: error: ") and re.search(message, last), err


def test_a_models_generation_defaults_apply_unless_given(model, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    shutil.copytree(model, tuned)
    (tuned / "generation_defaults.json").write_text(
        '{"steps": 3, "guidance_scale": 4.0, "guidance_rescale": 0.5}'
    )
    base = ["generate", "a cat", "--model", str(tuned), "--seed", "1"]
    assert cli.main([*base, "-o", str(tmp_path / "a.png")]) == 0
    record = read_record(tmp_path / "a.png")
    assert (record.steps, record.guidance_scale, record.guidance_rescale) == (3, 4.0, 0.5)
    assert cli.main([*base, "-o", str(tmp_path / "b.png"), "--steps", "2", "--guidance-rescale", "0"]) == 0
    record = read_record(tmp_path / "b.png")
    assert (record.steps, record.guidance_scale, record.guidance_rescale) == (2, 4.0, 0.0)
    # a PNG's record is kept whole: the model's defaults do not replace what made the image
    from_png = ["generate", "--from-png", str(tmp_path / "b.png"), "--model", str(tuned)]
    assert cli.main([*from_png, "-o", str(tmp_path / "c.png")]) == 0
    np.testing.assert_array_equal(_pixels(tmp_path / "c.png"), _pixels(tmp_path / "b.png"))
    # without the file: the fallbacks, which are GenerationRecord's defaults
    assert cli.main(["generate", "a cat", "--model", str(model), "-o", str(tmp_path / "d.png")]) == 0
    record = read_record(tmp_path / "d.png")
    assert (record.steps, record.guidance_scale, record.guidance_rescale) == (25, 7.5, 0.0)

    capsys.readouterr()
    for content, message in (
        ('{"steps": 3, "cfg": 4}', r"unknown setting\(s\) \['cfg'\]; known: \['guidance_rescale'"),
        ('{"steps": 0}', "steps must be an integer >= 1, got 0"),
        ("{steps: 3", "is not valid JSON"),
    ):
        (tuned / "generation_defaults.json").write_text(content)
        assert cli.main([*base, "-o", str(tmp_path / "e.png")]) == 2
        err = capsys.readouterr().err
        assert "generation_defaults.json" in err and re.search(message, err), err
    assert not (tmp_path / "e.png").exists()


def test_missing_default_model_says_to_pass_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shared_flags, "DEFAULT_MODEL", tmp_path / "default-model")
    assert cli.main(["generate", "a cat", "-o", str(tmp_path / "x.png")]) == 2
    assert "pass --model" in capsys.readouterr().err


def test_a1111_parameters_round_trip():
    record = GenerationRecord(
        prompt="a (red:1.2) circle, best",
        negative_prompt="blurry\nugly",
        seed=123,
        steps=30,
        scheduler="dpmpp-2m-karras",
        guidance_scale=6.5,
        clip_skip=1,
        width=64,
        height=48,
    )
    text = a1111_parameters(record)
    assert "Sampler: DPM++ 2M Karras" in text and "Clip skip: 2" in text
    parsed = parse_a1111_parameters(text)
    fields = (
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "scheduler",
        "guidance_scale",
        "clip_skip",
        "width",
        "height",
    )
    assert {f: getattr(parsed, f) for f in fields} == {f: getattr(record, f) for f in fields}
    assert json.loads(record.to_json())["scheduler"] == "dpmpp-2m-karras"


def test_a_sampler_that_does_not_fit_the_model_is_named_in_one_warning_line(model, tmp_path, capsys):
    zero_snr = tmp_path / "zero-snr"
    shutil.copytree(model, zero_snr)
    config = json.loads((zero_snr / "scheduler" / "scheduler_config.json").read_text())
    config.update(rescale_betas_zero_snr=True, prediction_type="v_prediction")
    (zero_snr / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    argv = ["generate", "a red circle", "--model", str(zero_snr), "--steps", "2", "--seed", "0"]
    assert cli.main([*argv, "--scheduler", "dpmpp-2m-karras", "-o", str(tmp_path / "k.png")]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warning == [
        line for line in warning if line.startswith("latentforge generate: warning: scheduler")
    ]
    assert len(warning) == 1 and "Karras sigmas do not suit" in warning[0]


def test_ctrl_c_ends_with_one_line_and_exit_code_130(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "_run", interrupted)
    assert cli.main(["generate", "a red circle", "-o", str(tmp_path / "x.png")]) == 130
    assert capsys.readouterr().err == "latentforge generate: interrupted\n"


def test_cache_interval_is_used_recorded_and_read_back(model, tmp_path):
    base = ["generate", "a red circle", "--model", str(model), "--steps", "6", "--seed", "3"]
    assert cli.main([*base, "-o", str(tmp_path / "exact.png")]) == 0
    assert cli.main([*base, "--cache-interval", "3", "-o", str(tmp_path / "cached.png")]) == 0
    exact, cached = (np.asarray(PIL.Image.open(tmp_path / f"{n}.png")) for n in ("exact", "cached"))
    assert not np.array_equal(exact, cached)  # the deep features were reused on 4 of 6 steps
    assert "cache_interval" not in PIL.Image.open(tmp_path / "exact.png").text["latentforge"]
    assert read_record(tmp_path / "cached.png").cache_interval == 3
    assert "Cache interval: 3" in PIL.Image.open(tmp_path / "cached.png").text["parameters"]
    again = ["generate", "--from-png", str(tmp_path / "cached.png"), "--model", str(model)]
    assert cli.main([*again, "-o", str(tmp_path / "again.png")]) == 0
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "again.png")), cached)
    warm = [*base, "--cache-interval", "3", "--cache-warmup", "2"]
    assert cli.main([*warm, "-o", str(tmp_path / "warm.png")]) == 0
    warmed = np.asarray(PIL.Image.open(tmp_path / "warm.png"))
    assert not np.array_equal(warmed, cached) and not np.array_equal(warmed, exact)  # full steps 0, 1, 2, 5
    assert (
        read_record(tmp_path / "warm.png").cache_interval,
        read_record(tmp_path / "warm.png").cache_warmup,
    ) == (3, 2)
    assert "Cache interval: 3, Cache warmup: 2" in PIL.Image.open(tmp_path / "warm.png").text["parameters"]
    again = ["generate", "--from-png", str(tmp_path / "warm.png"), "--model", str(model)]
    assert cli.main([*again, "-o", str(tmp_path / "warm-again.png")]) == 0
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "warm-again.png")), warmed)
    assert "cache_warmup" not in PIL.Image.open(tmp_path / "cached.png").text["latentforge"]
    for flags in (["--cache-interval", "0"], ["--cache-interval", "3", "--cache-warmup", "-1"]):
        assert cli.main([*base, *flags, "-o", str(tmp_path / "bad.png")]) == 2
    assert not (tmp_path / "bad.png").exists()
