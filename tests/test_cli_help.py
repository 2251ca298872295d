"""The help a user reads: whole sentences, the usage each command really has, the defaults in effect, and one
spelling per flag with the aliases people know from A1111, ComfyUI and diffusers."""

from __future__ import annotations

import argparse

import pytest

from latentforge import cli
from latentforge.commands import generate
from latentforge.resources import DEFAULT_MODEL, shipped_names


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_description_and_option_help_ends_with_a_full_stop():
    parser = cli.build_parser()
    texts = {"latentforge": parser.description}
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    texts |= {f"{c.dest} (command list)": c.help for c in action._choices_actions}
    for name, sub in _subparsers().items():
        texts[name] = sub.description
        for arg in sub._actions:
            if arg.help and not isinstance(arg, argparse._HelpAction):  # argparse's own -h is its own
                texts[f"{name} {'/'.join(arg.option_strings) or arg.dest}"] = arg.help
    cut = {name: text for name, text in texts.items() if not text.rstrip().endswith(".")}
    assert not cut


def test_generate_help_keeps_the_override_rule_and_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["inpaint", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "options given on the command line override the record." in out
    assert "usage: latentforge inpaint PROMPT --image IMAGE --mask MASK" in out
    assert "the built-in default model" in out and str(DEFAULT_MODEL) not in out
    assert "--strength STRENGTH img2img and inpaint: share of the schedule to run, in (0, 1] (default:" in out
    assert "else 0.75; the built-in model: 0.85)" in out and "else 4.0; the built-in model: 2.0)" in out


def test_train_help_has_a_clean_usage_line_the_config_names_and_output_dir(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert out.startswith(
        "usage: latentforge train {vae,clip,unet} --config CONFIG [KEY=VALUE ...] [-o DIR]\n"
    )
    assert "[KEY=VALUE [CONFIG" not in out
    assert all(name in out for name in shipped_names("train")) and "output_dir=DIR" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--negative-prompt", "blurry"], {"negative_prompt": "blurry"}),
        (["--cfg-scale", "6"], {"guidance_scale": 6.0}),
        (["-W", "96", "-H", "64"], {"width": 96, "height": 64}),
        (["--size", "64"], {"size": "64"}),
        (["--batch-size", "2", "--num-images", "4"], {"batch_size": 2, "num_images": 4}),
        (["--model", "default"], {"model": "default"}),
    ],
)
def test_aliases_land_on_the_same_setting(argv, expected):
    args = cli.parse_arguments(cli.build_parser(), ["generate", "a cat", *argv])
    assert {k: getattr(args, k) for k in expected} == expected


def test_size_forms_and_model_default_resolve_before_anything_loads():
    parse = cli.build_parser().parse_args
    record = generate.settings_from_args(parse(["generate", "a cat", "--size", "32", "--model", "default"]))
    assert (record.width, record.height, record.model) == (32, 32, str(DEFAULT_MODEL))
    record = generate.settings_from_args(parse(["generate", "a cat", "--size", "32x64", "-W", "48"]))
    assert (record.width, record.height) == (48, 64)


def test_overrides_follow_options_in_train_and_eval():
    parse = cli.parse_arguments
    args = parse(cli.build_parser(), ["train", "vae", "a=1", "--config", "smoke-vae", "b=2", "c.d=3"])
    assert (args.config, args.overrides) == ("smoke-vae", ["a=1", "b=2", "c.d=3"])
    args = parse(cli.build_parser(), ["eval", "vae", "--num-images", "3", "image_size=32"])
    assert args.overrides == ["image_size=32"]
