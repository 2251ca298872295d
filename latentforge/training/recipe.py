"""`latentforge train recipe --config NAME`: several training stages and an export, run in order as one
resumable command (the default model's recipe is `configs/recipes/default-model.yaml`).

A recipe is a YAML file:

    output_dir: runs/default-model        # every stage's run folder goes under it
    stages:
      - name: vae                         # run folder output_dir/vae
        train: vae                        # vae | clip | unet
        config: shapes-small-vae          # a shipped train config or a YAML path
        set: [optim.max_steps=1200]       # KEY=VALUE overrides; {vae} = that stage's exported model folder
      - name: vae-tail                    # continues stage vae's run folder, with its train, config and set
        run: vae                          # (then its own set, which wins where both give a key)
        set: [optim.max_steps=1500, optim.lr_scheduler=cosine]
      ...
    export:                               # optional: `latentforge export` of one stage's model (or a list)
      stage: unet-te
      to: default-model                   # folder under output_dir
      args: [--dtype, float16, --steps, "20"]   # {name} here too, e.g. [--vae, "{vae-decoder}"]

Each stage is a `latentforge train` command in its own process (fresh memory and accelerate state), with
`checkpoint.resume=latest`, so a recipe that was
interrupted (Ctrl-C, a kill, a new machine with the run folder copied over) continues where it stopped when
the same command is given again; a finished stage leaves `output_dir/.stages/<name>.done` (its command and
seconds, JSON) and is skipped after.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from latentforge.atomic_files import staged_file

STAGE_KINDS = ("vae", "clip", "unet")
_REFERENCE = re.compile(r"\{([A-Za-z0-9_-]+)\}")


@dataclass
class Stage:
    name: str
    train: str = ""  # with `run:`, the continued stage's
    config: str = ""  # with `run:`, the continued stage's
    set: list[str] = field(default_factory=list)  # with `run:`, added to the continued stage's
    run: str = ""  # another stage's run folder, continued (e.g. a cosine tail after a constant rate)


@dataclass
class Export:
    stage: str
    to: str
    args: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    output_dir: str
    stages: list[Stage]
    export: list[Export] = field(default_factory=list)  # `export:` in the file: one mapping or a list of them

    def run_dir(self, stage: Stage) -> Path:
        return Path(self.output_dir) / (stage.run or stage.name)

    def model_dir(self, name: str) -> Path:
        return self.run_dir(self.stage(name)) / "model"

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def settings(self, stage: Stage) -> list[str]:
        """The stage's KEY=VALUE overrides: a stage with `run:` starts from the continued stage's."""
        return [*(self.settings(self.stage(stage.run)) if stage.run else []), *stage.set]

    def done_marker(self, stage: Stage) -> Path:
        return Path(self.output_dir) / ".stages" / f"{stage.name}.done"


def _fields(kind: type, data: object, where: str, required: tuple[str, ...]) -> dict:
    """`data` as keyword arguments of `kind`, with an error naming `where` for anything else."""
    names = list(kind.__dataclass_fields__)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with keys {names}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; the keys are {names}")
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    for key in ("set", "args"):
        if key in data and not (isinstance(data[key], list) and all(isinstance(x, str) for x in data[key])):
            raise ValueError(f"{where}.{key}: expected a list of strings, got {data[key]!r}")
    return {k: v if isinstance(v, list) else str(v) for k, v in data.items()}


def load_recipe(path: str | Path, overrides: list[str]) -> Recipe:
    """The recipe in `path` with `output_dir=DIR` and `<stage>.<KEY>=VALUE` overrides (appended to that stage's
    `set`, so a stage that continues its run gets them too); ValueError naming the entry for anything
    malformed, before any stage starts."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"recipe {path} is not valid YAML text ({first}); fix the file") from None
    fields = _fields(Recipe, data, str(path), ("output_dir", "stages"))
    if not isinstance(data.get("stages"), list) or not data["stages"]:
        raise ValueError(f"{path}: stages: expected a non-empty list of stages")
    stages = [
        Stage(**_fields(Stage, s, f"{path}: stages[{i}]", ("name",))) for i, s in enumerate(data["stages"])
    ]
    exports = data.get("export") or []
    exports = [
        Export(
            **_fields(
                Export,
                e,
                f"{path}: export" + (f"[{i}]" if isinstance(exports, list) else ""),
                ("stage", "to"),
            )
        )
        for i, e in enumerate(exports if isinstance(exports, list) else [exports])
    ]
    recipe = Recipe(str(fields["output_dir"]), stages, exports)
    by_name = {s.name: s for s in stages}
    for item in overrides:
        key, sep, value = item.partition("=")
        stage, dot, rest = key.partition(".")
        if key == "output_dir" and sep:
            recipe.output_dir = value
        elif sep and dot and stage in by_name:
            by_name[stage].set.append(f"{rest}={value}")
        else:
            raise ValueError(
                f"recipe override {item!r}: give output_dir=DIR or STAGE.KEY=VALUE with STAGE one of {list(by_name)}"
            )
    _check(recipe, path)
    _check_stage_configs(recipe)
    return recipe


def _check_stage_configs(recipe: Recipe) -> None:
    """Every stage's training config with its overrides, read as its command will read it: a misspelt key or
    a bad value in the last stage fails now, not after the stages before it have trained for hours."""
    from latentforge.config_loader import load_config
    from latentforge.resources import config_file
    from latentforge.training.stage_configs import STAGE_CONFIGS

    for stage in recipe.stages:
        overrides = [arg for arg in stage_command(recipe, stage)[2:] if "=" in arg]
        try:
            load_config(STAGE_CONFIGS[stage.train], config_file("train", stage.config), overrides)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"recipe stage {stage.name!r}: {err}") from None


def _check(recipe: Recipe, path: str | Path) -> None:
    seen: list[str] = []
    for stage in recipe.stages:
        where = f"{path}: stage {stage.name!r}"
        if stage.name in seen:
            raise ValueError(f"{where}: a second stage of that name; names must be unique")
        if stage.run and stage.run not in seen:
            raise ValueError(f"{where}: run: {stage.run!r} is not an earlier stage {seen}")
        _inherit(recipe, stage, where)
        missing = [key for key in ("train", "config") if not getattr(stage, key)]
        if missing:
            raise ValueError(
                f"{where}: missing key(s) {missing} (or `run:`, to continue an earlier stage's run)"
            )
        if stage.train not in STAGE_KINDS:
            raise ValueError(f"{where}: train: {stage.train!r} is not one of {STAGE_KINDS}")
        for item in stage.set:
            if "=" not in item:
                raise ValueError(f"{where}: {item!r} is not KEY=VALUE")
            _check_references(item, seen, f"{where}: {item!r} refers to", "an earlier stage")
        seen.append(stage.name)
    for export in recipe.export:
        if export.stage not in seen:
            raise ValueError(f"{path}: export.stage {export.stage!r} is not one of the stages {seen}")
        _check_references(" ".join(export.args), seen, f"{path}: export args refer to", "one of the stages")


def _inherit(recipe: Recipe, stage: Stage, where: str) -> None:
    """A stage with `run:` gets the continued stage's train kind and config, which it may repeat but not
    change."""
    if not stage.run:
        return
    continued = recipe.stage(stage.run)
    for key in ("train", "config"):
        mine, theirs = getattr(stage, key), getattr(continued, key)
        if mine and mine != theirs:
            raise ValueError(
                f"{where}: {key}: {mine!r} differs from {theirs!r} of stage {stage.run!r}, whose run it "
                f"continues; leave {key} out"
            )
        setattr(stage, key, theirs)


def _check_references(text: str, seen: list[str], what: str, known: str) -> None:
    for ref in _REFERENCE.findall(text):
        if ref not in seen:
            raise ValueError(f"{what} {{{ref}}}, which is not {known} {seen}")


def _resolved(recipe: Recipe, items: list[str]) -> list[str]:
    """`items` with each {name} replaced by that stage's exported model folder."""
    return [_REFERENCE.sub(lambda m: str(recipe.model_dir(m.group(1))), item) for item in items]


def stage_command(recipe: Recipe, stage: Stage) -> list[str]:
    """The `latentforge train` arguments of `stage`, {name} references resolved to model folders."""
    overrides = _resolved(recipe, recipe.settings(stage))
    run = [f"output_dir={recipe.run_dir(stage)}", *overrides, "checkpoint.resume=latest"]
    return ["train", stage.train, *run, "--config", stage.config]


def export_command(recipe: Recipe, export: Export) -> list[str]:
    target = Path(recipe.output_dir) / export.to
    return [
        "export",
        str(recipe.model_dir(export.stage)),
        str(target),
        "--overwrite",
        *_resolved(recipe, export.args),
    ]


def run_recipe(recipe: Recipe, latentforge: Callable[[list[str]], int], stop_after: str = "") -> list[Path]:
    """Run the stages that are not done yet, then the exports, each through `latentforge(argv)` (a `train` or
    `export` command line run in its own process; it returns the exit code); the export folders (none after
    `stop_after`)."""
    names = [s.name for s in recipe.stages]
    if stop_after and stop_after not in names:
        raise ValueError(f"--stop-after {stop_after!r}: not one of the stages {names}")
    for i, stage in enumerate(recipe.stages, 1):
        marker = recipe.done_marker(stage)
        if marker.is_file():
            print(f"recipe: stage {i}/{len(names)} {stage.name}: done already ({marker})", flush=True)
        else:
            print(f"recipe: stage {i}/{len(names)} {stage.name}", flush=True)
            command = stage_command(recipe, stage)
            start = time.perf_counter()
            _run(latentforge, command)
            seconds = time.perf_counter() - start
            print(f"recipe: stage {stage.name} took {seconds:.1f} s", flush=True)
            with staged_file(marker) as tmp:  # whole or absent: a torn marker must not skip its stage
                tmp.write_text(
                    json.dumps({"command": shlex.join(["latentforge", *command]), "seconds": seconds})
                )
        if stage.name == stop_after:
            return []
    for export in recipe.export:
        _run(latentforge, export_command(recipe, export))
    return [Path(recipe.output_dir) / export.to for export in recipe.export]


def _run(latentforge: Callable[[list[str]], int], args: list[str]) -> None:
    print("$ latentforge", shlex.join(args), flush=True)
    hint = (
        f"recipe: `latentforge {shlex.join(args[:2])} ...` stopped; give the same recipe command again (after "
        "fixing what it said): finished stages are skipped and this one resumes"
    )
    try:
        code = latentforge(args)
    except BaseException:  # bad input, Ctrl-C, a crash: the command line says what; this says how to go on
        print(hint, file=sys.stderr)
        raise
    if code:
        print(hint, file=sys.stderr)
        raise SystemExit(code)
