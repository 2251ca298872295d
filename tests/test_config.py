"""Run configs: defaults, YAML overrides, key=value overrides, type coercion, unknown keys."""

import dataclasses
from typing import Literal

import pytest
import yaml

from latentforge.config_loader import ConfigError, load_config, save_config


@dataclasses.dataclass
class Ema:
    decay: float = 0.9999
    enabled: bool = False


@dataclasses.dataclass
class Run:
    output_dir: str = "runs/x"
    lr: float = 1e-4
    steps: int = 100
    prediction: Literal["epsilon", "v_prediction"] = "epsilon"
    prompts: list[str] = dataclasses.field(default_factory=lambda: ["a red circle"])
    size: tuple[int, int] = (64, 64)
    resume: str | None = None
    ema: Ema = dataclasses.field(default_factory=Ema)


def test_defaults_without_file_or_overrides():
    assert load_config(Run) == Run()


def test_yaml_then_command_line_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"lr": 3e-4, "steps": 10, "ema": {"enabled": True}}))
    config = load_config(Run, path, ["steps=20", "ema.decay=0.99", "prompts=a,b c", "size=32,48"])
    assert config.lr == 3e-4  # from the file
    assert config.steps == 20  # the command line wins over the file
    assert config.ema == Ema(decay=0.99, enabled=True)  # nested keys merge from both
    assert config.prompts == ["a", "b c"]
    assert config.size == (32, 48)
    assert config.output_dir == "runs/x"  # untouched default


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a/{x,y}.tar", ["a/{x,y}.tar"]),
        ("a/{000..009}.tar,b/{x,y}-{1,2}.tar", ["a/{000..009}.tar", "b/{x,y}-{1,2}.tar"]),
        ("a.tar, b.tar", ["a.tar", "b.tar"]),
    ],
)
def test_list_overrides_split_on_commas_outside_braces(value, items):
    # data.shards takes brace patterns ("shards/{x,y}.tar"), whose commas are not list separators
    assert load_config(Run, None, [f"prompts={value}"]).prompts == items


@pytest.mark.parametrize(
    ("override", "field", "expected"),
    [
        ("lr=1e-3", "lr", 1e-3),
        ("lr=2", "lr", 2.0),
        ("steps=1e3", "steps", 1000),
        ("ema.enabled=yes", "ema", Ema(enabled=True)),
        ("resume=none", "resume", None),
        ("resume=latest", "resume", "latest"),
        ("output_dir=123", "output_dir", "123"),
        ("prediction=v_prediction", "prediction", "v_prediction"),
    ],
)
def test_values_are_coerced_to_the_field_type(override, field, expected):
    value = getattr(load_config(Run, None, [override]), field)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=1.5", "steps must be a whole number"),
        ("steps=many", "steps must be a number"),
        ("ema.enabled=maybe", "ema.enabled must be true or false"),
        ("prediction=x0", "prediction must be one of"),
        ("size=1,2,3", "size needs 2 values"),
        ("ema=3", "ema is a group of settings"),
        ("lr", "not of the form key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Run, None, [override])


def test_unknown_keys_list_the_valid_ones(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown config key 'step'.*Did you mean 'steps'.*Valid keys: .*lr"
    ):
        load_config(Run, None, ["step=3"])
    with pytest.raises(ConfigError, match=r"'ema.decy'.*ema.decay, ema.enabled"):
        load_config(Run, None, ["ema.decy=0.5"])
    # a key that exists only inside a group is found there
    with pytest.raises(ConfigError, match=r"unknown config key 'decay'\. Did you mean 'ema.decay'\?"):
        load_config(Run, None, ["decay=0.5"])
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(Run, path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(Run, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Run, tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, tmp_path / "broken.yaml")


def test_saved_config_reloads_to_the_same_run(tmp_path):
    config = load_config(Run, None, ["steps=7", "ema.enabled=true", "resume=latest"])
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(Run, tmp_path / "saved.yaml") == config


def test_a_trainers_nested_keys_are_suggested():
    from latentforge.training.stage_configs import UNetTrainConfig

    with pytest.raises(
        ConfigError, match=r"unknown config key 'resume'\. Did you mean 'checkpoint.resume'\?"
    ):
        load_config(UNetTrainConfig, None, ["resume=latest"])
    with pytest.raises(ConfigError, match=r"Did you mean 'optim.max_steps'\?"):
        load_config(UNetTrainConfig, None, ["optim.max_step=3"])
