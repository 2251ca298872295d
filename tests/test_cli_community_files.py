"""Community files on the command line (issue 18): single-file checkpoints as --model in generate, eval and
export, `export MODEL OUT.safetensors`, --lora FILE[:WEIGHT] and A1111's <lora:NAME:WEIGHT> with --lora-dir,
--embedding FILE, each recorded in the PNG and applied again by --from-png; pickles only with --allow-pickle."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from pipeline_helpers import one_thread, tiny  # noqa: F401  (autouse fixture)
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_interop_lora import write_kohya

from latentforge import cli
from latentforge.commands.png_record import parse_a1111_parameters, read_record
from latentforge.models.lora_files import lora_short_hash
from latentforge.pipelines.pipeline import TextToImagePipeline

PROMPT = "a red circle"
STEPS = ["--steps", "2", "--seed", "7"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model as a folder and as a single file, a kohya LoRA in a LoRA folder, an A1111 embedding."""
    root = tmp_path_factory.mktemp("community")
    tiny().save_pretrained(root / "folder")
    tiny().save_single_file(root / "model.safetensors")
    (root / "loras").mkdir()
    write_kohya(root / "loras" / "style.safetensors", tiny())
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    save_file({"emb_params": vectors}, root / "shiny-style.safetensors")
    return root


def _generate(files, out, *argv: str, prompt: str = PROMPT) -> np.ndarray:
    model = ["--model", str(files / "folder")] if "--model" not in argv and "--from-png" not in argv else []
    assert cli.main(["generate", prompt, "-o", str(out), *model, *STEPS, *argv]) == 0
    return np.asarray(PIL.Image.open(out).convert("RGB"), dtype=np.int16)


def _regenerates_with_lora_dir(files, png: Path, image: np.ndarray, capsys, error: str) -> list[str]:
    """--from-png `png` without --lora-dir fails with `error` (exit 2); with it, it gives `image` again.
    Returns the --from-png arguments."""
    again = ["--from-png", str(png), "--model", str(files / "folder")]
    assert cli.main(["generate", "-o", str(png.with_name("without-dir.png")), *again]) == 2
    assert error in capsys.readouterr().err
    regenerated = _generate(
        files, png.with_name("again.png"), *again, "--lora-dir", str(files / "loras"), prompt=None
    )
    np.testing.assert_array_equal(regenerated, image)
    return again


def test_a_single_file_model_draws_the_folders_image_and_takes_its_options(files, tmp_path, capsys):
    folder = _generate(files, tmp_path / "folder.png")
    single = _generate(files, tmp_path / "file.png", "--model", str(files / "model.safetensors"))
    assert np.abs(single - folder).max() <= 1
    assert read_record(tmp_path / "file.png").model == "model.safetensors"  # its name, not its folder
    v_pred = _generate(
        files,
        tmp_path / "v.png",
        "--model",
        str(files / "model.safetensors"),
        "--prediction-type",
        "v_prediction",
    )
    assert np.abs(v_pred - single).max() > 10  # the option reached the loader
    assert cli.main(["generate", PROMPT, "--model", str(files / "folder"), "--use-ema"]) == 2
    assert "--use-ema: only for a single-file checkpoint" in capsys.readouterr().err


def test_a_pickled_checkpoint_needs_allow_pickle(files, tmp_path, capsys):
    tensors = load_file(files / "model.safetensors")
    torch.save({"state_dict": tensors}, tmp_path / "model.ckpt")
    args = ["--model", str(tmp_path / "model.ckpt")]
    assert cli.main(["generate", PROMPT, "-o", str(tmp_path / "x.png"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a pickle (.ckpt)" in err and "pass --allow-pickle" in err
    pickled = _generate(files, tmp_path / "p.png", *args, "--allow-pickle")
    np.testing.assert_array_equal(
        pickled, _generate(files, tmp_path / "s.png", "--model", str(files / "model.safetensors"))
    )


def _unet_dtypes(file) -> set[str]:
    with safe_open(file, "pt") as weights:
        names = [k for k in weights.keys() if k.startswith("model.diffusion_model.")]  # noqa: SIM118
        return {weights.get_slice(k).get_dtype() for k in names}


def test_export_to_a_safetensors_name_writes_one_single_file(files, tmp_path, capsys):
    source = tmp_path / "source"
    shutil.copytree(files / "folder", source)
    (source / "README.md").write_text("# model card\n")
    (source / "generation_defaults.json").write_text('{"steps": 3}')
    out = tmp_path / "out" / "model.safetensors"
    assert cli.main(["export", str(source), str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.safetensors"
    ]  # no card, no defaults beside
    assert _unet_dtypes(out) == {"F32"}
    pipe = TextToImagePipeline.from_single_file(out)
    torch.testing.assert_close(pipe.unet.conv_in.weight, tiny().unet.conv_in.weight)

    assert cli.main(["export", str(source), str(out)]) == 2  # refused before any loading
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["export", str(source), str(out), "--overwrite", "--dtype", "float16"]) == 0
    assert _unet_dtypes(out) == {"F16"}
    # a single-file SOURCE: back to a folder, keeping its float16
    assert cli.main(["export", str(out), str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "model_index.json").is_file()
    assert "(float16 weights)" in capsys.readouterr().out
    assert cli.main(["export", str(source), str(tmp_path / "m.safetensors"), "--steps", "4"]) == 2
    assert "is a single file: leave them out or export to a folder" in capsys.readouterr().err


def test_loras_from_flags_and_prompt_tags_load_once_with_their_weights(files, tmp_path):
    lora = files / "loras" / "style.safetensors"
    base = _generate(files, tmp_path / "base.png")
    flag = _generate(files, tmp_path / "flag.png", "--lora", f"{lora}:0.5")
    tag = _generate(
        files, tmp_path / "tag.png", "--lora-dir", str(files / "loras"), prompt=f"{PROMPT} <lora:style:0.5>"
    )
    full = _generate(files, tmp_path / "full.png", "--lora", str(lora))
    np.testing.assert_array_equal(flag, tag)  # the tag leaves the prompt; the weight is the same
    assert np.abs(flag - base).max() > 3 and np.abs(full - flag).max() > 3

    # the library's own calls give the same image
    pipe = TextToImagePipeline.from_pretrained(files / "folder")
    pipe.load_lora_weights(lora, adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.5])
    library = pipe(PROMPT, num_inference_steps=2, generator=7).images[0]
    assert np.abs(np.asarray(library, dtype=np.int16) - flag).max() <= 1


def test_the_png_records_the_loras_as_a1111_does_and_from_png_applies_them_again(files, tmp_path, capsys):
    lora = files / "loras" / "style.safetensors"
    out = tmp_path / "out" / "lora.png"
    first = _generate(files, out, "--lora", f"{lora}:0.5")
    record = read_record(out)
    short = lora_short_hash(lora)
    assert record.loras == [{"file": "style.safetensors", "weight": 0.5}]  # by name: no folder in the record
    assert record.lora_hashes == {"style": short}
    text = PIL.Image.open(out).text["parameters"]
    assert text.startswith(f"{PROMPT} <lora:style:0.5>\n")  # A1111 knows LoRAs as prompt tags
    assert f'Lora hashes: "style: {short}"' in text
    assert parse_a1111_parameters(text).lora_hashes == {"style": short}

    again = _regenerates_with_lora_dir(
        files, out, first, capsys, "--lora: file style.safetensors does not exist"
    )
    assert "warning" not in capsys.readouterr().err

    other = tmp_path / "other"
    other.mkdir()
    write_kohya(other / "style.safetensors", tiny(), seed=5)  # the same name, other weights
    _generate(files, tmp_path / "b.png", *again, "--lora-dir", str(other), prompt=None)
    err = capsys.readouterr().err
    assert f"warning: the LoRA style's hash {lora_short_hash(other / 'style.safetensors')} differs" in err


def test_a_prompt_tag_finds_its_file_again_with_lora_dir(files, tmp_path, capsys):
    out = tmp_path / "tag.png"
    first = _generate(files, out, "--lora-dir", str(files / "loras"), prompt="<lora:style:0.8> a red circle")
    record = read_record(out)
    assert (record.prompt, record.loras, list(record.lora_hashes)) == (
        "<lora:style:0.8> a red circle",
        [],
        ["style"],
    )
    _regenerates_with_lora_dir(files, out, first, capsys, "<lora:style> in the prompt: pass --lora-dir")


def test_embeddings_work_in_prompt_and_negative_and_come_back_from_the_png(files, tmp_path, capsys):
    embedding = files / "shiny-style.safetensors"
    plain = _generate(files, tmp_path / "plain.png", prompt="a shiny-style circle")
    out = tmp_path / "out" / "emb.png"
    used = _generate(files, out, "--embedding", str(embedding), prompt="a shiny-style circle")
    negative = _generate(
        files,
        tmp_path / "neg.png",
        "--embedding",
        str(embedding),
        "--negative",
        "shiny-style",
        prompt="a circle",
    )
    without = _generate(files, tmp_path / "neg0.png", "--negative", "shiny-style", prompt="a circle")
    assert np.abs(used - plain).max() > 3 and np.abs(negative - without).max() > 3
    record = read_record(out)
    assert record.embeddings == ["shiny-style.safetensors"] and list(record.embedding_hashes) == [
        "shiny-style"
    ]
    assert 'TI hashes: "shiny-style: ' in PIL.Image.open(out).text["parameters"]

    again = ["--from-png", str(out), "--model", str(files / "folder")]
    assert cli.main(["generate", "-o", str(tmp_path / "x.png"), *again]) == 2
    assert "--embedding: file shiny-style.safetensors does not exist (nor beside" in capsys.readouterr().err
    shutil.copy(embedding, out.parent)  # found beside the PNG, as input images are
    np.testing.assert_array_equal(_generate(files, tmp_path / "y.png", *again, prompt=None), used)


def test_eval_takes_a_single_file_negative_prompt_dtype_and_clip_skip(files, tmp_path):
    from latentforge.commands import evaluate
    from latentforge.evaluation import tasks
    from latentforge.evaluation.sampling import generate_images

    argv = ["eval", "compositional", "--model", str(files / "model.safetensors"), "--negative", "blurry"]
    argv += ["--dtype", "bfloat16", "--clip-skip", "1", "--prediction-type", "v_prediction"]
    config = evaluate.eval_config(cli.parse_arguments(cli.build_parser(), [*argv, "-o", str(tmp_path / "e")]))
    assert (config.negative_prompt, config.dtype, config.clip_skip) == ("blurry", "bfloat16", 1)
    pipe = tasks._pipeline(config, "cpu")
    assert pipe.dtype == torch.bfloat16 and pipe.scheduler.config.prediction_type == "v_prediction"
    call = {k: v for k, v in tasks._sampling(config).items() if k != "batch_size"}
    assert (call["negative_prompt"], call["clip_skip"]) == ("blurry", 1)

    pipe = TextToImagePipeline.from_pretrained(files / "folder")
    images = generate_images(pipe, [PROMPT], num_inference_steps=2, negative_prompt="blurry", clip_skip=1)
    direct = pipe(PROMPT, negative_prompt="blurry", clip_skip=1, num_inference_steps=2, generator=0).images[0]
    plain = generate_images(pipe, [PROMPT], num_inference_steps=2)
    np.testing.assert_array_equal(np.asarray(images[0]), np.asarray(direct))
    assert not np.array_equal(np.asarray(images[0]), np.asarray(plain[0]))

    out = tmp_path / "report"
    run = ["eval", "compositional", "--model", str(files / "model.safetensors"), "--num-prompts", "1"]
    assert cli.main([*run, "--steps", "1", "--negative", "blurry", "--clip-skip", "1", "-o", str(out)]) == 0
    settings = json.loads((out / "compositional.json").read_text())["settings"]
    assert (settings["negative_prompt"], settings["clip_skip"], settings["dtype"]) == ("blurry", 1, "auto")
    vae = ["eval", "vae", "--model", str(files / "model.safetensors"), "--num-images", "2", "image_size=32"]
    assert cli.main([*vae, "-o", str(out)]) == 0  # the single file's VAE


def test_train_names_the_conversion_for_a_pickled_base(tmp_path, capsys):
    (tmp_path / "base.ckpt").write_bytes(b"not read")
    argv = [
        "train",
        "unet",
        "--config",
        "smoke-unet",
        f"base={tmp_path / 'base.ckpt'}",
        "-o",
        str(tmp_path / "run"),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "is a pickle; training reads .safetensors only: convert it once with `latentforge export" in err
    assert "--allow-pickle`" in err and not (tmp_path / "run").exists()


def test_the_readme_command_lines_for_community_files_parse():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Using community files", 1)[1].split("```python", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("latentforge ")]
    assert len(lines) >= 10
    for line in lines:
        args = cli.parse_arguments(cli.build_parser(), shlex.split(line)[1:])
        assert args.command in {"generate", "eval", "export", "train"}
