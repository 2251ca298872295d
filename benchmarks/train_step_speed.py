"""Speed of one U-Net training step under switches that leave the model as it is: memory format,
torch.compile, caption length; side by side in one process.

Each variant is the ablation protocol's `ProbeStep` (forward and backward of the U-Net, and of the text encoder
when it trains, at the run's batch size, random weights) with one switch:

- `eager`: as the trainer runs today;
- `channels-last`: the U-Net's weights and the latents in channels-last memory format;
- `compile`: `torch.compile` on the U-Net (its first step, the compilation, is reported apart);
- `tokens-N`: captions of N tokens instead of the tokenizer's full length (a shorter text context).

Blocks of steps alternate between the variants, so a shared machine slows them alike. Prints one line per
variant: the first step's seconds, median seconds per step, samples/s and the ratio to the first variant.

    python benchmarks/train_step_speed.py --architecture small-c16 --variants eager channels-last compile tokens-32
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablation  # noqa: E402  (ProbeStep: the protocol's timed training step)

SWITCHES = ("eager", "channels-last", "compile")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="small-c16", help="configs/models/<name> (random weights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=["eager", "channels-last"],
                        help=f"{', '.join(SWITCHES)} or tokens-N; the first is the reference")  # fmt: skip
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and block")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks")
    parser.add_argument("--frozen-text-encoder", action="store_true",
                        help="time the U-Net alone (the text encoder's output computed once)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for name in args.variants:
        if name not in SWITCHES and not re.fullmatch(r"tokens-[1-9][0-9]*", name):
            parser.error(f"unknown variant {name!r}: use {', '.join(SWITCHES)} or tokens-N (N >= 1)")
    if len(set(args.variants)) != len(args.variants):
        parser.error(f"each variant once, got {args.variants}")
    return args


def make_step(name: str, architecture: str, batch_size: int, train_text_encoder: bool) -> ablation.ProbeStep:
    """`ProbeStep` of `architecture` with the switch `name` applied."""
    import torch

    step = ablation.ProbeStep(architecture, batch_size, train_text_encoder)
    if name == "channels-last":
        step.unet.to(memory_format=torch.channels_last)
        step.latents = step.latents.contiguous(memory_format=torch.channels_last)
    elif name == "compile":
        step.unet = torch.compile(step.unet)
    elif name.startswith("tokens-"):
        length = int(name.removeprefix("tokens-"))
        if length > step.ids.shape[1]:
            raise SystemExit(f"{name}: the tokenizer's captions have at most {step.ids.shape[1]} tokens")
        step.ids = step.ids[:, :length]
        if step.context is not None:
            step.context = step.text_encoder(step.ids).last_hidden_state
    return step


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    train_text_encoder = not args.frozen_text_encoder
    steps = {name: make_step(name, args.architecture, args.batch_size, train_text_encoder)
             for name in args.variants}  # fmt: skip
    first = {name: step() for name, step in steps.items()}  # warm-up; torch.compile compiles here
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.blocks):
        for name, step in steps.items():
            times[name] += [step() for _ in range(args.steps)]
    median = {name: statistics.median(t) for name, t in times.items()}
    reference = median[args.variants[0]]
    results = {
        name: {
            "first_step_s": first[name],
            "median_step_s": median[name],
            "samples_per_s": args.batch_size / median[name],
            "ratio": reference / median[name],
        }
        for name in steps
    }
    threads = torch.get_num_threads()
    print(f"{args.architecture}, batch {args.batch_size}, {threads} threads, text encoder "
          f"{'trained' if train_text_encoder else 'frozen'}; {args.blocks} x {args.steps} steps each")  # fmt: skip
    print(f"{'variant':>14} {'first step s':>13} {'s/step':>8} {'samples/s':>10} {'ratio':>6}")
    for name, r in results.items():
        print(f"{name:>14} {r['first_step_s']:>13.2f} {r['median_step_s']:>8.3f} "
              f"{r['samples_per_s']:>10.1f} {r['ratio']:>6.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "architecture": args.architecture,
                    "batch_size": args.batch_size,
                    "threads": threads,
                    "train_text_encoder": train_text_encoder,
                    "results": results,
                },
                indent=1,
            )  # fmt: skip
        )


if __name__ == "__main__":
    main()
