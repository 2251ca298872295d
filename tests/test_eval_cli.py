"""`latentforge eval ...` end to end on a tiny random model folder, and its input errors."""

from __future__ import annotations

import json
import shutil

import pytest

from latentforge.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random model saved in diffusers layout (32x32 images)."""
    from latentforge.models.components import Components

    path = tmp_path_factory.mktemp("eval-cli") / "tiny"
    Components.from_architecture("tiny", seed=0).save_pretrained(path)
    return path


def _metrics(path) -> dict:
    return {m["name"]: m["value"] for m in json.loads(path.read_text())["metrics"]}


def test_compositional_command_writes_a_report(tiny_model, tmp_path, capsys):
    out = tmp_path / "reports"
    args = ["eval", "compositional", "--model", str(tiny_model), "--num-prompts", "1", "--steps", "1"]
    assert main([*args, "-o", str(out), "--config", "quick", "batch_size=6"]) == 0
    metrics = _metrics(out / "compositional.json")
    # per split: 6 categories, overall, color_only, clean_shapes, exact_count, object_fit
    assert len(metrics) == 22 and all(0.0 <= v <= 1.0 for v in metrics.values())
    settings = json.loads((out / "compositional.json").read_text())["settings"]
    # flags beat the config file (quick.yaml sets num_prompts 8 and steps 10), KEY=VALUE applies too
    assert (settings["num_prompts"], settings["steps"], settings["batch_size"]) == (1, 1, 6)
    assert "in_distribution/overall" in capsys.readouterr().out
    assert (out / "compositional.md").is_file() and (out / "compositional.png").is_file()
    # a second run does not overwrite the report...
    assert main([*args, "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # ...unless asked to
    assert main([*args, "-o", str(out), "--overwrite", "--seed", "1"]) == 0


def test_sampling_settings_default_to_the_models_own(tiny_model, tmp_path):
    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_model, tuned)
    (tuned / "generation_defaults.json").write_text('{"steps": 2, "guidance_rescale": 0.7}')
    args = ["eval", "compositional", "--model", str(tuned), "--num-prompts", "1", "batch_size=6"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    settings = json.loads((tmp_path / "a" / "compositional.json").read_text())["settings"]
    assert (settings["steps"], settings["guidance_scale"], settings["guidance_rescale"]) == (2, 7.5, 0.7)
    assert main([*args, "-o", str(tmp_path / "b"), "--steps", "1", "--guidance-rescale", "0"]) == 0
    settings = json.loads((tmp_path / "b" / "compositional.json").read_text())["settings"]
    assert (settings["steps"], settings["guidance_scale"], settings["guidance_rescale"]) == (1, 7.5, 0.0)


def test_vae_and_fid_commands(tiny_model, tmp_path):
    out = str(tmp_path)
    assert (
        main(
            [
                "eval",
                "vae",
                "--model",
                str(tiny_model),
                "--num-images",
                "3",
                "-o",
                out,
                "image_size=32",
            ]
        )
        == 0
    )
    vae = _metrics(tmp_path / "vae.json")
    assert vae["psnr_db"] > 0 and -1 <= vae["ssim"] <= 1 and vae["lpips"] is None
    fid_args = ["eval", "fid", "--model", str(tiny_model), "--num-images", "4", "--steps", "1"]
    assert main([*fid_args, "--features", "pixels", "-o", out, "image_size=32"]) == 0
    fid = json.loads((tmp_path / "fid.json").read_text())["metrics"]
    assert fid[0]["name"] == "fid" and fid[0]["value"] > 0 and "features: pixels 16x16" in fid[0]["note"]


def test_emoji_command_with_pixel_features(tiny_model, tmp_path, monkeypatch):
    from PIL import Image

    from latentforge.evaluation import emoji_fidelity as emoji

    # a small stand-in gallery keeps the test fast (the real one renders ~1900 emoji)
    colors = ["red", "green", "blue", "yellow", "white", "black", "purple"]
    gallery = ([Image.new("RGB", (32, 32), c) for c in colors], [f"{c} square" for c in colors])
    monkeypatch.setattr(emoji, "emoji_gallery", lambda size, skin_tones: gallery)
    args = ["eval", "emoji", "--model", str(tiny_model), "--num-prompts", "3", "--steps", "1"]
    assert main([*args, "-o", str(tmp_path)]) == 0
    metrics = _metrics(tmp_path / "emoji.json")
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and metrics["chance_top5"] == pytest.approx(5 / 7)
    assert main([*args, "-o", str(tmp_path / "x"), "--num-prompts", "8"]) == 2  # more prompts than emoji


def test_input_errors_are_one_line_exit_2(tiny_model, tmp_path, capsys):
    cases = [
        (["eval", "compositional", "scheduler=euler-b"], "unknown name 'euler-b'"),
        (["eval", "vae", "--model", str(tmp_path / "missing")], "does not exist"),
        (["eval", "clip-score", "--model", str(tiny_model)], "--clip is required"),
        (["eval", "fid", "--model", str(tiny_model), "--features", "dino"], "feature space must be one of"),
        (["eval", "fid", "--model", str(tiny_model), "--clip", str(tmp_path)], "open_clip_config.json"),
        (["eval", "vae", "--model", str(tiny_model), "--config", "nope"], "not one of"),
        (["eval", "vae", "--model", str(tiny_model), "num_promts=3"], "num_promts"),
        (
            ["eval", "compositional", "--model", str(tiny_model), "--guidance-rescale", "1.5"],
            "guidance_rescale",
        ),
    ]
    for argv, message in cases:
        assert main([*argv, "-o", str(tmp_path / "out")]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "out").exists()  # nothing was written


def test_clip_score_and_fid_in_clip_space(tiny_model, tmp_path):
    from test_eval_metrics import _tiny_open_clip

    _, clip_folder = _tiny_open_clip(tmp_path)  # laid out like the CLIP trainer's <output_dir>/model
    common = ["--model", str(tiny_model), "--steps", "1", "--clip", str(clip_folder), "-o", str(tmp_path)]
    assert main(["eval", "clip-score", *common, "--num-prompts", "3", "image_size=32"]) == 0
    scores = _metrics(tmp_path / "clip-score.json")
    assert 0 <= scores["clip_score"] <= 100 and 0 <= scores["clip_score_ground_truth"] <= 100
    assert main(["eval", "fid", *common, "--num-images", "4", "--features", "clip", "image_size=32"]) == 0
    fid = json.loads((tmp_path / "fid.json").read_text())["metrics"][0]
    assert fid["value"] >= 0 and f"open_clip image tower ({clip_folder})" in fid["note"]
