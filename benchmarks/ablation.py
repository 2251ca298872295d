"""One row of the default model's ablation table: train a U-Net variant for a fixed budget, score it, append it.

A variant is the shipped U-Net recipe (`--config`, default shapes-small-unet) with KEY=VALUE overrides of the
training config and `unet.KEY=VALUE` overrides of the `small` architecture's U-Net config (any parameter of
diffusers' `UNet2DConditionModel`). The budget is 2-core wall-clock time, turned into samples so that rows
stay comparable when the machine is shared:
samples = minutes x 60 x baseline samples/s (`--baseline-rate`, measured on 2 free cores by
benchmarks/train_throughput.py) x the variant's speed relative to the baseline, timed side by side in this
process (`ProbeStep`: forward + backward at the run's batch size, the text encoder's too when it trains),
once: the plan is kept in RUNS/NAME/plan.json, so the same command given again continues the same run (its
steps and schedule) from its last checkpoint, and a finished row is not added twice. The model is then scored with `latentforge eval compositional` at fixed
sampling settings for every `--seeds` (each seed draws its own prompts and images), and one row is appended
to the table (docs/ablations.md by default) with the command that made it.

    python benchmarks/ablation.py baseline --minutes 12
    python benchmarks/ablation.py te-from-step-0 --minutes 12 train_text_encoder=true text_encoder_from=
    python benchmarks/ablation.py attn-4x4 --minutes 12 \\
        'unet.down_block_types=["CrossAttnDownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D"]' \\
        'unet.up_block_types=["CrossAttnUpBlock2D","CrossAttnUpBlock2D","CrossAttnUpBlock2D"]'

Without `vae_from`/`text_encoder_from` overrides the variant uses the shipped default model's VAE and text
encoder (frozen unless train_text_encoder=true); `text_encoder_from=` (empty) starts the text encoder from
random weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLING = ["--steps", "20", "--guidance", "5", "--guidance-rescale", "0.7"]  # fixed: rows stay comparable
COLUMNS = ("single_object", "colors", "position", "color_attribution", "overall")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="the row's name; its run goes to RUNS/NAME")
    parser.add_argument(
        "overrides", nargs="*", help="KEY=VALUE (training config) or unet.KEY=VALUE (JSON value)"
    )
    parser.add_argument(
        "--config", default="shapes-small-unet", help="the training config the variant changes"
    )
    parser.add_argument(
        "--architecture", default="small", help="configs/models/<name> the unet.* keys change"
    )
    parser.add_argument("--minutes", type=float, default=35.0, help="budget in minutes of 2-core time")
    parser.add_argument(
        "--baseline-rate", type=float, default=18.0, help="baseline samples/s on 2 free cores"
    )
    parser.add_argument("--max-steps", type=int, help="train exactly this many steps (skips the budget)")
    parser.add_argument("--probe-steps", type=int, default=3, help="timed steps per U-Net in the speed probe")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1], help="eval seeds (prompts and images)"
    )
    parser.add_argument("--num-prompts", type=int, default=5, help="eval prompts per category and seed")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--runs", default="runs/ablations", help="folder of the rows' runs")
    parser.add_argument("--table", default="docs/ablations.md", help="the results table (appended)")
    return parser.parse_intermixed_args(argv)


def split_overrides(overrides: list[str], prefix: str = "unet.") -> tuple[list[str], dict]:
    """(training KEY=VALUE pairs, {`prefix`ed config key: parsed JSON value})."""
    train, component = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"ablation: {item!r} is not KEY=VALUE")
        if not key.startswith(prefix):
            train.append(item)
            continue
        try:
            component[key[len(prefix) :]] = json.loads(value)
        except json.JSONDecodeError as err:
            raise SystemExit(f"ablation: {item!r}: the value must be JSON ({err})") from None
    return train, component


def config_parameters(class_name: str) -> set[str]:
    """The config keys a diffusers model class accepts: its constructor's parameters."""
    import inspect

    import diffusers

    return set(inspect.signature(getattr(diffusers, class_name).__init__).parameters) - {"self"}


def variant_architecture(architecture: str, keys: dict, folder: Path, subfolder: str = "unet") -> str:
    """`architecture` itself, or a copy of its folder in `folder` with keys of `subfolder`/config.json replaced."""
    from latentforge.resources import architecture_dir

    if not keys:
        return architecture
    source = architecture_dir(architecture)
    config = json.loads((source / subfolder / "config.json").read_text())
    unknown = sorted(set(keys) - set(config) - config_parameters(config["_class_name"]))
    if unknown:
        raise SystemExit(
            f"ablation: {subfolder} keys {unknown} are neither in {architecture}'s {subfolder}/config.json "
            f"nor parameters of diffusers' {config['_class_name']}"
        )
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder)
    (folder / subfolder / "config.json").write_text(json.dumps(config | keys, indent=2))
    return str(folder)


class ProbeStep:
    """One training step of an architecture at random weights, timed: the U-Net's forward and backward on random
    latents and a full-length caption (the tokenizer's `model_max_length` tokens), with the text encoder's
    forward and backward as well when it trains alongside (otherwise its output is computed once, as the
    latent cache does)."""

    def __init__(self, architecture: str, batch_size: int, train_text_encoder: bool) -> None:
        import torch

        from latentforge.models.components import Components

        parts = Components.from_architecture(architecture)
        self.unet = parts.unet
        self.text_encoder = parts.text_encoder.requires_grad_(train_text_encoder)
        length = parts.tokenizer.model_max_length
        self.ids = torch.randint(0, self.text_encoder.config.vocab_size, (batch_size, length))
        self.context = None if train_text_encoder else self.text_encoder(self.ids).last_hidden_state
        size = self.unet.config.sample_size
        self.latents = torch.randn(batch_size, self.unet.config.in_channels, size, size)
        self.t = torch.randint(0, 1000, (batch_size,))

    def __call__(self) -> float:
        start = time.perf_counter()
        context = self.context
        if context is None:
            context = self.text_encoder(self.ids).last_hidden_state
        self.unet(self.latents, self.t, context).sample.square().mean().backward()
        return time.perf_counter() - start


def speed_ratio(
    baseline: str, variant: str, batch_size: int, steps: int, train_text_encoder: bool = False
) -> float:
    """The variant's samples/s over the baseline's: `ProbeStep`s of the two after a warm-up each, alternated."""
    if baseline == variant:
        return 1.0
    runs = {name: ProbeStep(name, batch_size, train_text_encoder) for name in (baseline, variant)}
    times = {name: [] for name in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(steps):
        for name, run in runs.items():
            times[name].append(run())
    return statistics.median(times[baseline]) / statistics.median(times[variant])


def share_caches(runs: Path, run: Path) -> None:
    """Hard-link the other rows' latent caches into this run's cache folder: the trainer uses one whose key
    matches (same VAE, text encoder and data) instead of encoding 20k images again, and drops the others."""
    target = run / "train" / "cache"
    for meta in runs.glob("*/train/cache/*/meta.json"):
        if not (target / meta.parent.name).exists() and run not in meta.parents:
            shutil.copytree(meta.parent, target / meta.parent.name, copy_function=os.link)


def latentforge(*args: str) -> None:
    """Run the CLI; a failure stops the row with the command's own message."""
    command = [sys.executable, "-m", "latentforge", *args]
    print("$", shlex.join(command[2:]), flush=True)
    if subprocess.run(command).returncode:
        raise SystemExit(f"ablation: {shlex.join(command[2:])} failed")


def score(model: Path, run: Path, seeds: list[int], args: argparse.Namespace) -> dict[str, float]:
    """Mean of each compositional metric over the seeds, per split ("in_distribution/overall": ...)."""
    per_seed = []
    for seed in seeds:
        out = run / f"eval-seed{seed}"
        if not (out / "compositional.json").is_file():
            latentforge(
                "eval", "compositional", "--model", str(model), "--seed", str(seed), "--num-prompts",
                str(args.num_prompts), "--images-per-prompt", str(args.images_per_prompt), *SAMPLING,
                "-o", str(out), "--overwrite",
            )  # fmt: skip
        metrics = json.loads((out / "compositional.json").read_text())["metrics"]
        per_seed.append({m["name"]: m["value"] for m in metrics})
    return {name: statistics.fmean(s[name] for s in per_seed) for name in per_seed[0]}


def table_row(
    args: argparse.Namespace,
    argv: list[str],
    steps: int,
    batch: int,
    rate: float,
    scores: dict,
    seconds: float,
) -> str:
    cells = [f"{scores[f'{split}/{c}']:.2f}" for split in ("in_distribution", "held_out") for c in COLUMNS]
    command = shlex.join(["python", "benchmarks/ablation.py", *argv])
    return (
        f"| {args.name} | {' '.join(args.overrides) or '(the recipe)'} | {rate:.1f} | {steps * batch:,} | "
        f"{seconds / 60:.0f} | {' | '.join(cells)} | `{command}` |\n"
    )


TABLE_HEAD = (
    "| row | setting | samples/s (2 cores) | samples | minutes here | single | colours | position | colour attr. | "
    "overall | held-out single | colours | position | colour attr. | held-out overall | command |\n"
    + "|---" * 16
    + "|\n"
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from latentforge.config_loader import load_config
    from latentforge.resources import DEFAULT_MODEL, config_file
    from latentforge.training.stage_configs import UNetTrainConfig

    train, unet = split_overrides(args.overrides)
    run = Path(args.runs) / args.name
    run.mkdir(parents=True, exist_ok=True)
    base = variant_architecture(args.architecture, unet, run / "architecture")
    given = {item.partition("=")[0] for item in train}
    defaults = [f"{k}={DEFAULT_MODEL}" for k in ("vae_from", "text_encoder_from") if k not in given]
    train = [f"output_dir={run / 'train'}", f"base={base}", *defaults, *train]
    config = load_config(UNetTrainConfig, config_file("train", args.config), train)  # typos fail here
    batch = config.optim.batch_size
    done = run / "scores.json"
    if done.is_file():  # the row is in the table already
        print(f"ablation {args.name}: done already ({done})")
        return
    plan_file = run / "plan.json"
    if plan_file.is_file():  # a rerun continues the same run: the same steps, so the same schedule
        plan = json.loads(plan_file.read_text())
    else:
        ratio = speed_ratio(args.architecture, base, batch, args.probe_steps, config.train_text_encoder)
        rate = args.baseline_rate * ratio
        steps = args.max_steps or math.ceil(args.minutes * 60 * rate / batch)
        plan = {"steps": steps, "rate": rate, "ratio": ratio}
        plan_file.write_text(json.dumps(plan))
    steps, rate = plan["steps"], plan["rate"]
    print(
        f"ablation {args.name}: {rate:.1f} samples/s ({plan['ratio']:.2f}x the baseline) -> {steps} steps of {batch}"
    )
    start = time.perf_counter()
    model = run / "train" / "model"
    if not (model / "model_index.json").is_file():
        share_caches(Path(args.runs), run)
        resume = ["checkpoint.resume=latest"] if (run / "train" / "checkpoints").is_dir() else []
        latentforge("train", "unet", "--config", args.config, *train, f"optim.max_steps={steps}", *resume)
    scores = score(model, run, args.seeds, args)
    table = Path(args.table)
    table.parent.mkdir(parents=True, exist_ok=True)
    if not table.is_file():
        table.write_text(TABLE_HEAD)
    with table.open("a") as f:
        f.write(table_row(args, argv, steps, batch, rate, scores, time.perf_counter() - start))
    done.write_text(json.dumps({**plan, "scores": scores}, indent=2))
    print(f"ablation {args.name}: overall {scores['in_distribution/overall']:.3f} in distribution, "
          f"{scores['held_out/overall']:.3f} held out (clean shapes {scores['in_distribution/clean_shapes']:.3f}"
          f" / {scores['held_out/clean_shapes']:.3f}, exact count {scores.get('in_distribution/exact_count', math.nan):.3f} / "
          f"{scores.get('held_out/exact_count', math.nan):.3f}, object fit {scores['in_distribution/object_fit']:.3f} / "
          f"{scores['held_out/object_fit']:.3f}) -> {table}")  # fmt: skip


if __name__ == "__main__":
    main()
