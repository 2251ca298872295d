"""What the commands write and print: output names and folders, the PNG record (no folder names unless asked;
every field A1111 writes), the inpainting defaults in effect, export's precision, and quiet output."""

from __future__ import annotations

import json
import shutil

import PIL.Image
import pytest
import torch
from pipeline_helpers import box_mask, random_image, tiny
from safetensors import safe_open

from latentforge import cli
from latentforge.commands import evaluate
from latentforge.commands.png_record import read_record
from latentforge.commands.shared_flags import DeprecatedFlag
from latentforge.resources import DEFAULT_MODEL


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "my-private-folder" / "tiny"
    tiny().save_pretrained(path)
    return path


def test_outputs_go_to_numbered_files_in_a_folder_made_when_missing(model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["generate", "a red circle", "--model", str(model), "--steps", "1", "--seed", "7"]
    assert cli.main([*base, "--num-images", "2", "--batch-size", "1"]) == 0  # no -o: the folder outputs
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [
        "00000-7.png",
        "00001-8.png",
        "00002-grid.png",
    ]
    assert cli.main([*base, "-o", "outputs"]) == 0  # the next number
    assert (tmp_path / "outputs" / "00003-7.png").is_file()
    assert cli.main([*base, "-o", "new/deeper/one.png"]) == 0  # a missing folder is made
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "saved new/deeper/one.png (seed 7)"
    # a batch of one per pass gives the images of one pass of two
    one_pass = tmp_path / "one-pass"
    assert cli.main([*base, "--num-images", "2", "-o", str(one_pass)]) == 0
    for i, seed in enumerate((7, 8)):
        batched = PIL.Image.open(tmp_path / "outputs" / f"{i:05d}-{seed}.png")
        assert list(batched.getdata()) == list(PIL.Image.open(one_pass / f"{i:05d}-{seed}.png").getdata())


def test_the_png_record_names_the_model_without_its_folder_and_has_every_a1111_field(model, tmp_path):
    image, mask, out = tmp_path / "in.png", tmp_path / "mask.png", tmp_path / "out.png"
    random_image(1).save(image)
    box_mask().save(mask)
    argv = ["inpaint", "a star", "--image", str(image), "--mask", str(mask), "--model", str(model)]
    assert cli.main([*argv, "--steps", "2", "--seed", "3", "-o", str(out)]) == 0
    texts = PIL.Image.open(out).text
    assert "my-private-folder" not in texts["latentforge"] and str(tmp_path) not in texts["latentforge"]
    assert "my-private-folder" not in texts["parameters"]
    record = read_record(out)
    assert (record.model, record.image, record.mask) == ("tiny", "in.png", "mask.png")
    fields = dict(item.split(": ", 1) for item in texts["parameters"].splitlines()[-1].split(", "))
    expected = ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Denoising strength"]
    assert list(fields)[: len(expected)] == expected and "Mask blur" in fields and "Version" in fields
    assert (fields["Denoising strength"], fields["Mask blur"]) == ("0.75", "4.0")  # the fallbacks
    assert cli.main([*argv, "--steps", "2", "-o", str(tmp_path / "kept.png"), "--record-paths"]) == 0
    assert read_record(tmp_path / "kept.png").model == str(model.resolve())


def test_the_model_sampler_is_named_when_none_was_asked_for(model, tmp_path):
    assert (
        cli.main(["generate", "a cat", "--model", str(model), "--steps", "1", "-o", str(tmp_path / "a.png")])
        == 0
    )
    scheduler = json.loads((model / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    names = {"DDIMScheduler": "DDIM", "PNDMScheduler": "PLMS", "DDPMScheduler": "DDPM"}
    assert f"Sampler: {names[scheduler]}," in PIL.Image.open(tmp_path / "a.png").text["parameters"]
    assert read_record(tmp_path / "a.png").scheduler is None  # --from-png keeps using the model's own


def test_inpainting_defaults_come_from_the_model_then_the_fallbacks(model, tmp_path):
    tuned = tmp_path / "tuned"
    shutil.copytree(model, tuned)
    (tuned / "generation_defaults.json").write_text('{"steps": 2, "strength": 0.85, "mask_blur": 2}')
    random_image(2).save(tmp_path / "in.png")
    box_mask().save(tmp_path / "mask.png")
    argv = ["inpaint", "a star", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    assert cli.main([*argv, "--model", str(tuned), "-o", str(tmp_path / "a.png")]) == 0
    assert (read_record(tmp_path / "a.png").strength, read_record(tmp_path / "a.png").mask_blur) == (
        0.85,
        2.0,
    )
    assert cli.main([*argv, "--model", str(tuned), "--mask-blur", "0", "-o", str(tmp_path / "b.png")]) == 0
    assert read_record(tmp_path / "b.png").mask_blur == 0.0
    shipped = json.loads((DEFAULT_MODEL / "generation_defaults.json").read_text())
    assert (shipped["strength"], shipped["mask_blur"]) == (0.85, 2.0)  # chosen by looking: see the README


def test_no_third_party_progress_bars(model, tmp_path, capfd):
    assert (
        cli.main(["generate", "a cat", "--model", str(model), "--steps", "1", "-o", str(tmp_path / "q.png")])
        == 0
    )
    assert cli.main(["export", str(model), str(tmp_path / "exported")]) == 0
    captured = capfd.readouterr()
    for bar in ("Loading weights", "Writing model shards", "Loading pipeline components"):
        assert bar not in captured.err + captured.out


def _unet_dtypes(folder) -> set:
    with safe_open(folder / "unet" / "diffusion_pytorch_model.safetensors", "pt") as weights:
        return {weights.get_tensor(k).dtype for k in weights.keys()}  # noqa: SIM118


def test_export_keeps_the_source_precision_unless_asked(tmp_path, capsys):
    half = tmp_path / "half"
    assert cli.main(["export", "tiny", "-o", str(half), "--architecture", "--dtype", "float16"]) == 0
    assert cli.main(["export", str(half), str(tmp_path / "again")]) == 0
    assert _unet_dtypes(tmp_path / "again") == {torch.float16}
    assert cli.main(["export", str(half), str(tmp_path / "full"), "--dtype", "float32"]) == 0
    assert _unet_dtypes(tmp_path / "full") == {torch.float32}
    capsys.readouterr()
    assert cli.main(["export", "tiny", str(tmp_path / "old"), "--architecture", "--fp16"]) == 0
    assert _unet_dtypes(tmp_path / "old") == {torch.float16}
    assert "latentforge export: warning: --fp16 is deprecated and will be removed; use --dtype float16" in (
        capsys.readouterr().err
    )


def test_eval_uses_the_built_in_model_by_default_and_set_still_works(tmp_path):
    parse = cli.build_parser().parse_args
    config = evaluate.eval_config(parse(["eval", "compositional", "-o", str(tmp_path)]))
    assert (config.model, config.steps, config.guidance_scale) == (str(DEFAULT_MODEL), 20, 3.0)
    with pytest.warns(DeprecatedFlag, match=r"--set KEY=VALUE is deprecated .* after the task"):
        config = evaluate.eval_config(parse(["eval", "vae", "--set", "image_size=32", "-o", str(tmp_path)]))
    assert config.image_size == 32


def test_inpainting_uses_the_built_in_inpainting_variant_when_it_is_installed(model, tmp_path, monkeypatch):
    from latentforge.commands import png_record, shared_flags

    text_to_image, variant = tmp_path / "default-model", tmp_path / "default-inpaint-model"
    shutil.copytree(model, text_to_image)
    (text_to_image / "generation_defaults.json").write_text('{"steps": 2, "strength": 0.5}')
    tiny("tiny-inpaint").save_pretrained(variant)
    (variant / "generation_defaults.json").write_text('{"steps": 1, "strength": 1.0}')
    for module in (shared_flags, png_record):
        monkeypatch.setattr(module, "DEFAULT_MODEL", text_to_image)
        monkeypatch.setattr(module, "DEFAULT_INPAINT_MODEL", variant)
    random_image(2).save(tmp_path / "in.png")
    box_mask().save(tmp_path / "mask.png")
    argv = ["inpaint", "a star", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    assert cli.main([*argv, "-o", str(tmp_path / "a.png")]) == 0
    record = read_record(tmp_path / "a.png")
    assert (record.model, record.strength) == ("default", 1.0)  # the variant's defaults: it was the model
    assert cli.main(["generate", "a star", "-o", str(tmp_path / "b.png")]) == 0
    assert read_record(tmp_path / "b.png").model == "default"
    parse = cli.build_parser().parse_args
    assert evaluate.eval_config(parse(["eval", "inpainting", "-o", str(tmp_path / "e")])).model == str(
        variant
    )
    assert evaluate.eval_config(parse(["eval", "vae", "-o", str(tmp_path / "e")])).model == str(text_to_image)
    shutil.rmtree(variant)  # not installed: the text-to-image model inpaints
    assert cli.main([*argv, "-o", str(tmp_path / "c.png")]) == 0
    assert read_record(tmp_path / "c.png").strength == 0.5
