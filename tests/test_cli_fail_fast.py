"""Every mistake on the command line answers at once: exit code 2 and one line that names the input and the
fix, before torch, diffusers or transformers are imported (checked in a fresh process)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import PIL.Image
import pytest

from latentforge import cli

# Runs each argv through cli.main in one fresh process, then reports which heavy modules got imported.
SCRIPT = r"""
import contextlib, io, json, sys
from latentforge import cli
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit:
            code = exit.code
    results.append([code, err.getvalue()])
heavy = [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]
print(json.dumps({"results": results, "heavy": heavy}))
"""

CASES = [
    (["generate", "a cat", "--size", "65x65", "-o", "OUT/x.png"], r"multiples of 4 \(the VAE's downscale"),
    (["generate", "a cat", "-W", "64", "-H", "66", "-o", "OUT/x.png"], r"got 64x66"),
    (["generate", "a cat", "--size", "64x", "-o", "OUT/x.png"], r"--size must be WIDTHxHEIGHT or one number"),
    (["generate", "a cat", "--steps", "0"], r"steps must be an integer >= 1, got 0"),
    (["generate", "a cat", "-o", "OUT/x.jpg"], r"must be a \.png file .* or a folder"),
    (["generate", "a", "cat"], r"unrecognized arguments: cat \(quote a prompt of several words\)"),
    (["generate", "a cat", "--model", "OUT/no-model"], r"--model: folder .*no-model does not exist"),
    (
        ["img2img", "a cat", "--image", "IMAGE", "--strength", "0"],
        r"strength must be a number in \(0.0, 1.0\]",
    ),
    (["inpaint", "a cat", "--image", "IMAGE"], r"--mask is required"),
    (["inpaint", "a cat", "--image", "IMAGE", "--mask", "IMAGE", "--mask-blur", "-1"], r"mask_blur must be"),
    (["img2img", "a cat", "--image", "OUT/none.png"], r"--image: file .*none.png does not exist"),
    # an image 5x the default model's area (64x64) without --size: told the size to pass, at the image's shape
    (["img2img", "a cat", "--image", "BIG"], r"--image is 200x100, 5x the area .*pass --size 92x44"),
    (["inpaint", "a cat", "--image", "BIG", "--mask", "BIG"], r"--image is 200x100, 5x .*--size 92x44"),
    (["train", "unet", "output_dir=OUT/run"], r"--config is required: one of \[.*'smoke-unet'"),
    (["train", "unet", "--config", "nope"], r"'nope': no such file and not one of the shipped train configs"),
    (["train", "vae", "--config", "smoke-vae", "max_steps"], r"overrides must look like KEY=VALUE"),
    # config keys and model folders of a training run are checked before the trainer (and torch) loads
    (["train", "unet", "--config", "smoke-unet", "resume=latest"], r"Did you mean 'checkpoint.resume'\?"),
    (["train", "vae", "--config", "smoke-vae", "optim.max_step=3"], r"Did you mean 'optim.max_steps'\?"),
    (["train", "unet", "--config", "smoke-unet", "base=OUT/none"], r"base=.*none: no such folder; set base="),
    (
        ["train", "clip", "--config", "smoke-clip", "optim.batch_size=many"],
        r"optim.batch_size must be a number",
    ),
    (["eval", "compositional", "num_promts=3", "-o", "OUT/e"], r"Did you mean 'num_prompts'\?"),
    (["eval", "vae", "--config", "nope", "-o", "OUT/e"], r"not one of the shipped eval configs \['full'"),
    (["eval", "compositional", "scheduler=euler-b", "-o", "OUT/e"], r"unknown name 'euler-b'; choose one of"),
    (["eval", "fid", "--guidance-rescale", "1.5", "-o", "OUT/e"], r"guidance_rescale must be a number in"),
    (["export", "tiny", "--architecture"], r"give the OUTPUT folder or \.safetensors file once"),
    # community files (issue 18): pickles, LoRA names and files, embeddings, single-file options
    (
        ["generate", "a cat", "--model", "CKPT", "-o", "OUT/x.png"],
        r"--model: .*model.ckpt is a pickle \(\.ckpt\).*pass --allow-pickle",
    ),
    (
        ["eval", "compositional", "--model", "CKPT", "-o", "OUT/e"],
        r"--model: .*is a pickle .*pass --allow-pickle",
    ),
    (["export", "CKPT", "OUT/m.safetensors"], r"SOURCE: .*is a pickle .*pass --allow-pickle"),
    (["export", "tiny", "IMAGE", "--architecture"], r"image.png exists; pass --overwrite"),
    (
        ["export", "tiny", "OUT/m.safetensors", "--architecture", "--steps", "4"],
        r"is a single file: leave them out",
    ),
    (["generate", "a cat", "--lora", "CKPT:0.5"], r"--lora: .*model.ckpt is a pickle"),
    (
        ["generate", "a cat", "--lora", "x.safetensors:heavy"],
        r"the weight 'heavy' is not a number; write FILE:0.8",
    ),
    (
        ["generate", "a <lora:nope:0.5> cat", "--lora-dir", "OUT"],
        r"<lora:nope>: no nope.safetensors in .*it has: model",
    ),
    (["generate", "a <lora:nope> cat"], r"<lora:nope> in the prompt: pass --lora-dir"),
    (
        ["generate", "a cat", "--embedding", "OUT/none.safetensors"],
        r"--embedding: file .*none.safetensors does not exist",
    ),
    (
        ["generate", "a cat", "--use-ema"],
        r"--use-ema: only for a single-file checkpoint, and --model .* is a folder",
    ),
    (
        ["generate", "a cat", "--model", "CKPT", "--allow-pickle", "--model-architecture", "sd99"],
        r"--model-architecture: architecture 'sd99' not found",
    ),
    (["eval", "fid", "--clip-skip", "-1", "-o", "OUT/e"], r"--clip-skip must be >= 0, got -1"),
    (
        ["eval", "fid", "dtype=half", "-o", "OUT/e"],
        r"--dtype must be one of auto, float32, float16, bfloat16",
    ),
]


def test_mistakes_fail_with_exit_code_2_before_torch_is_imported(tmp_path):
    PIL.Image.new("RGB", (64, 64), "green").save(tmp_path / "image.png")
    PIL.Image.new("RGB", (200, 100), "green").save(tmp_path / "big.png")
    (tmp_path / "model.ckpt").write_bytes(b"never opened")
    names = {"OUT": tmp_path, "IMAGE": tmp_path / "image.png", "CKPT": tmp_path / "model.ckpt"}
    names["BIG"] = tmp_path / "big.png"
    argvs = [[_fill(a, names) for a in argv] for argv, _ in CASES]
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(argvs)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    for (argv, message), (code, err) in zip(CASES, report["results"]):
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert re.search(message, lines[-1]), (argv, err)
        assert lines[-1].startswith(f"latentforge {argv[0]}: error: ") or lines[-1].startswith(
            "latentforge: error:"
        )
    assert report["heavy"] == []  # no mistake waited for torch
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.png",
        "image.png",
        "model.ckpt",
    ]  # and nothing was written


def _fill(arg: str, names: dict) -> str:
    for name, path in names.items():
        arg = arg.replace(name, str(path))
    return arg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.max_step=3", r"unknown config key 'optim.max_step'\. Did you mean 'optim.max_steps'\?"),
        ("base=RUN/model", r"base=.*/model: no such folder; set base= to a model folder, a hub id"),
        ("vae_from=RUN/vae", r"vae_from=.*/vae: no such folder; set vae_from= to a trained model folder"),
    ],
)
def test_train_config_mistakes_name_the_key_before_any_work(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    argv = ["train", "unet", "--config", "smoke-unet", override.replace("RUN", str(run)), "-o", str(run)]
    assert cli.main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not run.exists()
