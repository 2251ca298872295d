"""Training runs that die: `latentforge train` in a child process stopped by SIGKILL/SIGTERM at a random moment
or at a named point of the run (a fault point), and the comparison of a finished run with a straight one.

A fault point is `MODULE:ATTRIBUTE:CALL:ACTION`: the child wraps that function and, at its CALL-th call in
this process, sends itself SIGKILL before or after the call (`kill-before`, `kill-after`) or prints
`FAULT_POINT` and waits for a signal from outside (`wait-after`). Nothing in latentforge knows about it.
Used by tests/test_reliability_faults.py and benchmarks/reliability.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAULT_POINT = "FAULT_POINT"
# where a kill is a kill "during" each phase of a U-Net run (CALL counts calls within one process)
CACHE_WRITE = "latentforge.training.latent_cache:save_file:1:kill-after"  # cache file written, no meta.json
CHECKPOINT_WRITE = "latentforge.training.checkpoints:save_objects:{n}:kill-after"  # no manifest yet
STEP = "latentforge.training.run:TrainingRun.end_step:{n}:kill-before"  # optimizer step n done, not counted
EXPORT_WRITE = "latentforge.training.unet_export:write_model_card:1:kill-before"  # weights staged, no card

PRELUDE = f"""
import functools, importlib, os, signal, sys, time
from latentforge.cli import main
module, attribute, at, action = sys.argv[1].split(":")
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real, calls = getattr(owner, name), [0]

@functools.wraps(real)
def faulty(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(at) and action == "kill-before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if calls[0] == int(at) and action == "kill-after":
        os.kill(os.getpid(), signal.SIGKILL)
    if calls[0] == int(at) and action == "wait-after":
        print("{FAULT_POINT}", flush=True)
        time.sleep(600)
    return result

setattr(owner, name, faulty)
sys.exit(main(sys.argv[2:]))
"""


def train_command(out: Path, overrides: list[str], fault: str = "", config: str = "smoke-unet") -> list[str]:
    """`latentforge train unet` into `out`, optionally with a fault point."""
    program = ["-c", PRELUDE, fault] if fault else ["-m", "latentforge"]
    return [sys.executable, *program, "train", "unet", "--config", config, f"output_dir={out}", *overrides]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def run_training(out: Path, overrides: list[str], fault: str = "") -> subprocess.CompletedProcess:
    """Run to the end (or to the fault point's kill); stdout/stderr captured."""
    return subprocess.run(
        train_command(out, overrides, fault),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
    )


def signal_at_fault_point(out: Path, overrides: list[str], fault: str, signum: int) -> tuple[int, str]:
    """Start a run whose fault point waits (`wait-after`), send it `signum` from outside when it gets there;
    (exit code, stderr)."""
    child = subprocess.Popen(
        train_command(out, overrides, fault),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == FAULT_POINT:
            child.send_signal(signum)
            break
    _, err = child.communicate(timeout=300)
    return child.returncode, err


def kill_at_random(out: Path, overrides: list[str], delay: float) -> tuple[int, float]:
    """Start a run and SIGKILL it `delay` seconds later (unless it ended first); (exit code, seconds run)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        train_command(out, overrides),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return child.returncode, time.perf_counter() - start


def phase_of(out: Path) -> str:
    """What the run was doing, read from what it left in `out` (for a run killed at a random moment)."""
    checkpoints, cache = out / "checkpoints", out / "cache"
    if (out / "model").is_dir():
        return "after the export"
    if list(out.glob(".model.tmp-*")):
        return "export"
    if checkpoints.is_dir() and list(checkpoints.glob(".tmp-step-*")):
        return "checkpoint write"
    if not list(cache.glob("*/meta.json")):
        return "start-up / cache build"
    return "steps"


def random_delays(count: int, start: float, end: float, seed: int = 0) -> list[float]:
    """`count` kill moments spread at random over [start, end] seconds (one per equal slice: no two clumped)."""
    rng, width = random.Random(seed), (end - start) / count
    return [start + width * (i + rng.random()) for i in range(count)]


def compared_files(step: int) -> list[str]:
    """The files a resumed run must share with the straight run: the export's U-Net (EMA weights), and the
    last checkpoint's trained weights and its EMA shadow / LR-scheduler tensors."""
    last = f"checkpoints/checkpoint-{step}"
    return [
        "model/unet/diffusion_pytorch_model.safetensors",
        f"{last}/model.safetensors",
        f"{last}/objects.safetensors",
    ]


def max_differences(reference: Path, out: Path, step: int) -> dict[str, float]:
    """Largest |a - b| over every tensor of each compared file (inf when a file or a tensor is missing)."""
    from safetensors.torch import load_file

    found = {}
    for rel in compared_files(step):
        if not (out / rel).is_file():
            found[rel] = float("inf")
            continue
        a, b = load_file(reference / rel), load_file(out / rel)
        if a.keys() != b.keys():
            found[rel] = float("inf")
            continue
        found[rel] = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    return found
