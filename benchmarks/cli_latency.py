"""Latency of the first thing a new user runs: `latentforge generate PROMPT -o out.png` on the default model.

Reports (1) the whole command, process start to PNG on disk, as a user sees it, beside a bare
`python -c "import torch"` run in turn (their difference is what latentforge adds to torch's start-up), and
(2) generation alone (prompt encoding + denoising + decode, in-process, model already loaded), for ours and
for diffusers' StableDiffusionPipeline on the same weights, scheduler, seed and settings (the model's
defaults, as the command uses them), side by side.

    python benchmarks/cli_latency.py [--model PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latentforge.resources import DEFAULT_MODEL

PROMPT = "a red circle to the left of a blue square"


def time_command(model: Path, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of the whole CLI command and of `python -c "import torch"`, fresh processes, in turn."""
    times: dict[str, list[float]] = {"command": [], "import torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            out = Path(tmp) / f"out{i}.png"
            cmd = [sys.executable, "-m", "latentforge", "generate", PROMPT, "-o", str(out), "--seed", "0"]
            if model != DEFAULT_MODEL:
                cmd += ["--model", str(model)]
            for name, argv in (("command", cmd), ("import torch", [sys.executable, "-c", "import torch"])):
                start = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
            assert out.is_file()
    return times


def time_generation(model: Path, repeats: int, settings: dict) -> dict[str, list[float]]:
    """In-process seconds per image for ours and diffusers on the same components and `settings`."""
    import torch
    from diffusers import StableDiffusionPipeline

    from latentforge import TextToImagePipeline

    ours = TextToImagePipeline.from_pretrained(model)
    theirs = StableDiffusionPipeline.from_pretrained(
        model, safety_checker=None, requires_safety_checker=False
    )
    theirs.set_progress_bar_config(disable=True)
    ours.set_progress_bar_config(disable=True)
    results: dict[str, list[float]] = {"latentforge": [], "diffusers": []}
    for _ in range(repeats + 1):  # the first round warms up both
        for name, pipe in (("latentforge", ours), ("diffusers", theirs)):
            start = time.perf_counter()
            pipe(PROMPT, **settings, generator=torch.Generator().manual_seed(0))
            results[name].append(time.perf_counter() - start)
    return {name: values[1:] for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    from latentforge.pipelines.sampling_defaults import read_defaults

    settings = read_defaults(args.model).pipeline_kwargs()
    print(f"model {args.model}, {settings}, torch threads {torch.get_num_threads()}")
    runs = time_command(args.model, args.repeats)
    command, torch_only = (statistics.median(runs[name]) for name in ("command", "import torch"))
    print(f"whole command (process start -> PNG): median {command:.2f} s  {runs['command']}")
    print(f'python -c "import torch": median {torch_only:.2f} s  {runs["import torch"]}')
    print(f"command - import torch: {command - torch_only:.2f} s, ratio {command / torch_only:.2f}x")
    gen = time_generation(args.model, args.repeats, settings)
    ours, theirs = statistics.median(gen["latentforge"]), statistics.median(gen["diffusers"])
    print(f"generation only: latentforge {ours:.3f} s, diffusers {theirs:.3f} s, ratio {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
