"""One row of the VAE ablation table: train a VAE variant from scratch for a fixed budget, score it, append it.

A variant is the shipped VAE recipe (`--config`, default shapes-small-vae: 1,200 steps of 8 images, the
PatchGAN from step 800) with KEY=VALUE overrides of the training config and `vae.KEY=VALUE` overrides of the
`small` architecture's vae/config.json (written to a copy of the architecture folder in the row's run). The
budget is the config's optim.max_steps (override it like any key). The model is scored with `latentforge eval
vae` on held-out scenes: objects_kept per image, objects found again per shape and for small stars (14-20 px
sides, issue 17's losses), PSNR and SSIM; one row with the command that made it goes to the table
(docs/vae-ablations.md). The same command again continues: training resumes from the last checkpoint (or is
skipped once the model is exported), the eval is skipped once written, and a row already in the table is not
added twice.

    python benchmarks/vae_ablation.py baseline
    python benchmarks/vae_ablation.py latent-8 vae.latent_channels=8
    python benchmarks/vae_ablation.py no-gan-800 optim.max_steps=800 loss.disc_start=100000
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation  # noqa: E402  (the U-Net protocol: CLI runner, overrides, architecture copies)
from ablation import latentforge  # noqa: E402

SHAPE_COLUMNS = ("circle", "square", "triangle", "star", "star_14-20px")
TABLE_HEAD = """# VAE ablations

Protocol (benchmarks/vae_ablation.py): each row trains a VAE from scratch with `latentforge train vae --config
shapes-small-vae` (20,000 built-in shapes scenes at 64 px, batch 8, 1,200 steps = 9,600 samples, PatchGAN from
step 800, EMA weights exported) plus the row's overrides, on 1 thread of a shared 2-core machine, then scores it
with `latentforge eval vae --num-images 512` (held-out scenes, seed 0, posterior modes). Judge a row by objects
found again, not PSNR: *objects kept* = images whose reconstruction the shapes detector reads as the same
objects and background; the shape columns = the scenes' objects (ground truth) found again in the
reconstruction with their shape and colour, centred in their box; *small stars* = stars of 14-20 px sides.
Noise: 512 images hold ~1,230 objects, ~300 stars and ~155 small stars, so one binomial standard error is
about 0.02 for objects kept and 0.02-0.04 for small stars: differences under ~0.06 on objects kept and ~0.1
on small stars are within two standard errors (all rows score the same scenes, which narrows it somewhat).
*Star solidity* = median area / convex hull of the small stars' regions in the reconstruction, a graded view of
how star-like they come back (drawn ~0.55, blur sigma 1 ~0.72, the detector's stars < 0.78, blur sigma 2 ~0.9).
*Minutes* = training time as the run counted it (shared machine: compare with care).

| row | setting | steps | samples | objects kept | objects (all) | circle | square | triangle | star | small stars \
(14-20 px) | star solidity | PSNR dB | SSIM | minutes | command |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="the row's name; its run goes to RUNS/NAME")
    parser.add_argument(
        "overrides", nargs="*", help="KEY=VALUE (training config) or vae.KEY=VALUE (JSON value)"
    )
    parser.add_argument(
        "--config", default="shapes-small-vae", help="the training config the variant changes"
    )
    parser.add_argument(
        "--architecture", help="configs/models/<name> the vae.* keys change (default: model=)"
    )
    parser.add_argument("--num-images", type=int, default=512, help="held-out scenes scored")
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the held-out scenes")
    parser.add_argument("--runs", default="runs/vae-ablations", help="folder of the rows' runs")
    parser.add_argument("--table", default="docs/vae-ablations.md", help="the results table (appended)")
    return parser.parse_intermixed_args(argv)


def split_overrides(overrides: list[str]) -> tuple[list[str], dict]:
    """(training KEY=VALUE pairs, {VAE config key: parsed JSON value}) of `vae.KEY=VALUE` items."""
    return ablation.split_overrides(overrides, prefix="vae.")


def variant_architecture(architecture: str, subfolder: str, keys: dict, folder: Path) -> str:
    """`architecture`, or a copy in `folder` with keys of `subfolder`/config.json replaced (ablation's)."""
    return ablation.variant_architecture(architecture, keys, folder, subfolder)


def train_once(args: argparse.Namespace, train: list[str], run: Path) -> dict:
    """Train (resuming from the last checkpoint, if any) unless the model is exported; its vae_metrics.json."""
    model = run / "train" / "model"
    if not (model / "vae_metrics.json").is_file():  # the export writes the folder whole or not at all
        resume = (
            ["checkpoint.resume=latest"] if any((run / "train" / "checkpoints").glob("checkpoint-*")) else []
        )
        latentforge("train", "vae", "--config", args.config, *train, *resume)
    return json.loads((model / "vae_metrics.json").read_text())


def score(args: argparse.Namespace, model: Path, run: Path, image_size: int) -> dict[str, float | None]:
    """`latentforge eval vae`'s metrics by name, run once per (images, seed) and read back after."""
    out = run / f"eval-{args.num_images}-seed{args.eval_seed}"
    if not (out / "vae.json").is_file():
        latentforge(
            "eval", "vae", "--model", str(model), "--num-images", str(args.num_images), "--seed",
            str(args.eval_seed), f"image_size={image_size}", "-o", str(out), "--overwrite",
        )  # fmt: skip
    return {m["name"]: m["value"] for m in json.loads((out / "vae.json").read_text())["metrics"]}


def table_row(args: argparse.Namespace, argv: list[str], trained: dict, batch: int, scores: dict) -> str:
    def cell(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    shapes = [cell(scores.get(f"object_kept_{c}")) for c in SHAPE_COLUMNS]
    shapes.append(cell(scores.get("star_14-20px_solidity")))
    command = shlex.join(["python", "benchmarks/vae_ablation.py", *argv])
    return (
        f"| {args.name} | {' '.join(args.overrides) or '(the recipe)'} | {trained['steps']:,} | "
        f"{trained['steps'] * batch:,} | {cell(scores['objects_kept'])} | {cell(scores['object_kept'])} | "
        f"{' | '.join(shapes)} | {cell(scores['psnr_db'], 1)} | {cell(scores['ssim'], 3)} | "
        f"{trained['seconds'] / 60:.0f} | `{command}` |\n"
    )


def append_row(table: Path, row: str) -> bool:
    """Append `row` (creating the table with its protocol) unless the table already has it; whether it did."""
    table.parent.mkdir(parents=True, exist_ok=True)
    if not table.is_file():
        table.write_text(TABLE_HEAD)
    if row in table.read_text():
        return False
    with table.open("a") as f:
        f.write(row)
    return True


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from latentforge.config_loader import load_config
    from latentforge.resources import config_file
    from latentforge.training.stage_configs import VAETrainConfig

    train, vae_keys = split_overrides(args.overrides)
    run = Path(args.runs) / args.name
    run.mkdir(parents=True, exist_ok=True)
    config = load_config(VAETrainConfig, config_file("train", args.config), train)  # typos fail here
    model = variant_architecture(args.architecture or config.model, "vae", vae_keys, run / "architecture")
    train = [f"output_dir={run / 'train'}", *train, f"model={model}"]
    trained = train_once(args, train, run)
    scores = score(args, run / "train" / "model", run, config.data.resolution)
    row = table_row(args, argv, trained, config.optim.batch_size, scores)
    added = append_row(Path(args.table), row)
    print(
        f"vae_ablation {args.name}: objects kept {scores['objects_kept']:.3f}, small stars "
        f"{scores['object_kept_star_14-20px']} -> {args.table}{'' if added else ' (row already there)'}"
    )


if __name__ == "__main__":
    main()
