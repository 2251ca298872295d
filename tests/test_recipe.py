"""`latentforge train recipe`: the shipped recipes are valid to the last key, a malformed one is refused before
any stage runs, and the smoke recipe runs its stages, stops, resumes (finished stages untouched, the continued
stage from its checkpoint) and exports a model that stock diffusers loads."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from latentforge.cli import main
from latentforge.config_loader import load_config
from latentforge.resources import config_file, shipped_names
from latentforge.training.recipe import export_command, load_recipe, stage_command
from latentforge.training.stage_configs import STAGE_CONFIGS


@pytest.mark.parametrize("name", shipped_names("recipes"))
def test_every_stage_of_a_shipped_recipe_is_a_valid_training_config(name):
    recipe = load_recipe(config_file("recipes", name), [])
    assert recipe.stages
    for stage in recipe.stages:
        command = stage_command(recipe, stage)
        overrides = [arg for arg in command[2:] if "=" in arg]
        config = load_config(STAGE_CONFIGS[stage.train], config_file("train", stage.config), overrides)
        assert config.output_dir == str(recipe.run_dir(stage)) and config.checkpoint.resume == "latest"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


GOOD = """
output_dir: runs/x
stages:
  - {name: vae, train: vae, config: smoke-vae}
  - {name: unet, train: unet, config: smoke-unet, set: ["vae_from={vae}"]}
"""

TAIL = "  - {name: tail, run: unet, set: [optim.max_steps=6]}\n"


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (GOOD.replace("train: vae", "train: vea"), [], "'vea' is not one of"),
        (GOOD.replace("{vae}", "{vea}"), [], "refers to {vea}, which is not an earlier stage"),
        (GOOD.replace("config: smoke-vae", "config: smoke-vae, sett: []"), [], "unknown key(s) ['sett']"),
        (GOOD.replace("{name: vae, ", "{"), [], "missing key(s) ['name']"),
        (GOOD.replace("name: unet", "name: vae"), [], "names must be unique"),
        (GOOD.replace('["vae_from={vae}"]', "vae_from"), [], "expected a list of strings"),
        (GOOD.replace("train: vae, ", ""), [], "missing key(s) ['train'] (or `run:`"),
        (
            GOOD + TAIL.replace("run: unet", "run: unet, train: vae"),
            [],
            "'vae' differs from 'unet' of stage 'unet'",
        ),
        (GOOD + TAIL.replace("run: unet", "run: unet, config: smoke-vae"), [], "leave config out"),
        (GOOD + TAIL.replace("run: unet", "run: tail"), [], "run: 'tail' is not an earlier stage"),
        (GOOD + "export: {stage: vea, to: out}\n", [], "export.stage 'vea'"),
        (GOOD + "export: [{stage: unet, to: a}, {stage: vea, to: b}]\n", [], "export.stage 'vea'"),
        (GOOD + 'export: {stage: unet, to: a, args: [--vae, "{vea}"]}\n', [], "export args refer to {vea}"),
        ("output_dir: x\nstages: []\n", [], "non-empty list of stages"),
        (GOOD, ["vea.optim.max_steps=3"], "STAGE one of ['vae', 'unet']"),
    ],
)
def test_a_malformed_recipe_is_refused_naming_the_entry(tmp_path, text, overrides, message):
    with pytest.raises(ValueError) as err:
        load_recipe(write(tmp_path, text), overrides)
    assert message in str(err.value)


def test_export_args_name_stage_models(tmp_path):
    text = GOOD + 'export: [{stage: unet, to: out, args: [--vae, "{vae}"]}, {stage: vae, to: v}]\n'
    recipe = load_recipe(write(tmp_path, text), ["output_dir=elsewhere"])
    first, second = (export_command(recipe, export) for export in recipe.export)
    assert first == [
        "export",
        "elsewhere/unet/model",
        "elsewhere/out",
        "--overwrite",
        "--vae",
        "elsewhere/vae/model",
    ]
    assert second[1:3] == ["elsewhere/vae/model", "elsewhere/v"]


def test_overrides_reach_the_named_stage_and_the_output_dir(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), ["output_dir=elsewhere", "unet.optim.max_steps=3"])
    command = stage_command(recipe, recipe.stages[1])
    assert "output_dir=elsewhere/unet" in command and "vae_from=elsewhere/vae/model" in command
    assert command.index("optim.max_steps=3") < command.index("checkpoint.resume=latest")


def test_a_stage_that_continues_a_run_starts_from_its_settings(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD + TAIL), ["unet.optim.learning_rate=1e-3"])
    unet, tail = recipe.stages[1:]
    assert (tail.train, tail.config, recipe.run_dir(tail)) == ("unet", "smoke-unet", recipe.run_dir(unet))
    command = stage_command(recipe, tail)
    assert command[:2] == ["train", "unet"] and command[-2:] == ["--config", "smoke-unet"]
    settings = command[2 : command.index("checkpoint.resume=latest")]
    assert settings == [
        "output_dir=runs/x/unet",
        "vae_from=runs/x/vae/model",
        "optim.learning_rate=1e-3",
        "optim.max_steps=6",
    ]
    config = load_config(STAGE_CONFIGS["unet"], config_file("train", "smoke-unet"), settings)
    assert config.optim.max_steps == 6 and config.optim.learning_rate == 1e-3


def test_smoke_recipe_stops_resumes_and_exports(tmp_path, capfd):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "run"
    assert main(["train", "recipe", "--config", "smoke", "-o", str(out), "--stop-after", "unet"]) == 0
    assert sorted(p.name for p in (out / ".stages").iterdir()) == ["unet.done", "vae.done"]
    assert not (out / "model-fp16").exists()
    vae_weights = out / "vae" / "model" / "vae" / "diffusion_pytorch_model.safetensors"
    before = vae_weights.stat().st_mtime_ns
    capfd.readouterr()
    assert main(["train", "recipe", "--config", "smoke", "-o", str(out)]) == 0
    said = capfd.readouterr().out
    assert "stage 1/5 vae: done already" in said and "stage 2/5 unet: done already" in said
    assert "resumed from" in said and "checkpoint-4 at step 4" in said  # the tail continues the unet run
    assert vae_weights.stat().st_mtime_ns == before
    assert json.loads((out / "model-fp16" / "generation_defaults.json").read_text())["steps"] == 4
    with safe_open(out / "model-fp16" / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        names = f.keys()
        assert {f.get_slice(name).get_dtype() for name in names} == {"F16"}
    pipe = StableDiffusionPipeline.from_pretrained(out / "model-fp16", safety_checker=None)
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()
    inpaint = json.loads((out / "inpaint-fp16" / "model_index.json").read_text())
    assert inpaint["_class_name"] == "StableDiffusionInpaintPipeline"
    assert json.loads((out / "inpaint-fp16" / "generation_defaults.json").read_text())["strength"] == 1.0
    assert json.loads((out / "inpaint-fp16" / "unet" / "config.json").read_text())["in_channels"] == 9


def test_a_bad_key_in_any_stage_is_refused_before_the_first_stage_runs(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace('["vae_from={vae}"]', '["vae_from={vae}", optim.max_stepz=1]'))
    assert main(["train", "recipe", "--config", str(path), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "recipe stage 'unet'" in err and "max_stepz" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_recipe_that_is_not_yaml_is_one_line(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("config: smoke-vae}", "config: [smoke-vae}"))
    assert main(["train", "recipe", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not valid YAML text" in err


def test_a_stage_that_fails_stops_the_recipe_with_its_exit_code(tmp_path, capfd):
    path = write(tmp_path, GOOD.replace("config: smoke-vae}", "config: smoke-vae, set: [model=no/such/vae]}"))
    with pytest.raises(SystemExit) as stopped:
        main(["train", "recipe", "--config", str(path), "-o", str(tmp_path / "run")])
    err = capfd.readouterr().err
    assert (
        stopped.value.code == 2 and "model=no/such/vae" in err and "give the same recipe command again" in err
    )
    assert not (tmp_path / "run" / ".stages").exists()


def test_a_recipe_under_several_processes_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "recipe", "--config", "smoke"]) == 2
    assert "not under accelerate launch" in capsys.readouterr().err


def test_gpu_recipe_script_runs_the_smoke_recipe_on_the_cpu(tmp_path):
    """benchmarks/gpu_recipe.sh end to end with RECIPE=smoke in probe mode: every stage timed, the model
    exported, both eval seeds and the VAE scored, all under the output folder (what a GPU run brings back)."""
    env = {**os.environ, "RECIPE": "smoke", "PROBE": "1", "PROBE_STEPS": "3", "EVAL_PROMPTS": "1"}
    env |= {"EVAL_VAE_IMAGES": "8"}
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_recipe.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path)], env=env | {"OMP_NUM_THREADS": "1"}, text=True,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    timed = (tmp_path / "stage_seconds.txt").read_text().split()
    assert [timed[i].rstrip(":") for i in range(0, len(timed), 3)] == [
        "vae",
        "unet",
        "unet-tail",
        "unet-anneal",
        "inpaint",
    ]
    tail = json.loads((tmp_path / "run" / ".stages" / "unet-tail.done").read_text())["command"]
    assert tail.endswith(
        "optim.max_steps=3 checkpoint.every_steps=0 checkpoint.resume=latest --config smoke-unet"
    )
    for seed in (0, 1):
        assert (tmp_path / f"eval-compositional-seed{seed}" / "compositional.json").is_file()
    assert (tmp_path / "eval-vae" / "vae.json").is_file() and (tmp_path / "run" / "model-fp16").is_dir()
    assert (tmp_path / "eval-inpaint-fp16" / "inpainting.json").is_file()
