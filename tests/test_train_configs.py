"""Every training config in configs/train/ loads into its stage's dataclass, and YAML overrides of one key
of a group keep the trainer's own defaults for the rest of that group."""

from pathlib import Path

import pytest

from latentforge.config_loader import load_config
from latentforge.resources import config_file, configs_root
from latentforge.training import clip, unet, vae


def _stage_module(name: str):
    """The trainer a config is for: vae and clip configs say so in their name, every other one is a U-Net run."""
    stages = {"vae": vae, "clip": clip}
    return next((module for stage, module in stages.items() if stage in name), unet)


@pytest.mark.parametrize("path", sorted((configs_root() / "train").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_train_config_loads(path: Path):
    config = load_config(_stage_module(path.stem).CONFIG_CLASS, path)
    assert config.output_dir.startswith("runs/"), "configs must write under runs/ by default"


def test_group_override_keeps_the_trainers_group_defaults(tmp_path):
    from latentforge.training.stage_configs import VAETrainConfig

    yaml = tmp_path / "x.yaml"
    yaml.write_text("optim:\n  max_steps: 7\n")
    config = load_config(VAETrainConfig, yaml)
    assert config.optim.max_steps == 7
    # VAETrainConfig's own optim default (LDM's Adam betas), not OptimConfig's class default
    assert (config.optim.adam_beta1, config.optim.adam_beta2, config.optim.weight_decay) == (0.5, 0.9, 0.0)
    assert load_config(VAETrainConfig, None, ["optim.batch_size=3"]).optim.adam_beta1 == 0.5


def test_config_names_resolve_and_unknown_names_are_listed():
    assert config_file("train", "smoke-vae") == configs_root() / "train" / "smoke-vae.yaml"
    with pytest.raises(FileNotFoundError, match="smoke-vae"):
        config_file("train", "no-such-config")


def test_the_train_command_offers_every_stage():
    from latentforge.commands.train import STAGES
    from latentforge.training.stage_configs import STAGE_CONFIGS

    assert tuple(STAGE_CONFIGS) == STAGES
