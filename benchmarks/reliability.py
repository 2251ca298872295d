"""The reliability figures of issue 21 in one table: bad inputs rejected clearly, kills survived and resumed to
the straight run, full disks and checkpoints lost, threads x calls and mismatches, soak calls with memory and
file-descriptor growth.

    OMP_NUM_THREADS=1 python benchmarks/reliability.py --quick               # about 3 minutes on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/reliability.py --kills 10 --soak-calls 500 --json reliability.json

Kills: a smoke U-Net run (EMA on, a checkpoint every 4 of 24 steps, the last 2 kept) is SIGKILLed once at each
fault point (cache build, a step, a checkpoint write, the export) and at `--kills` random moments spread over
the straight run's time after start-up; each is resumed with checkpoint.resume=latest and its export, last
checkpoint and EMA compared with the straight run (equal = every tensor within 1e-6; bit-exact counted too).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import disk_full
import fault_runs
import pipeline_load

ROOT = Path(__file__).resolve().parents[1]
KILL_RUN = ["optim.max_steps=24", "checkpoint.every_steps=4", "checkpoint.keep_last=2"]
TOLERANCE = 1e-6


def bad_inputs() -> dict:
    """The bad-input tests of part A (tests/test_reliability_inputs*.py): cases tried and passed."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_reliability_inputs*.py"))
    if not files:
        return {
            "files": [],
            "tried": 0,
            "rejected_clearly": 0,
            "note": "no tests/test_reliability_inputs*.py yet",
        }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rN", *files]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts = {
        kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|error|errors|skipped|xfailed)", tail)
    }
    tried = sum(counts.values()) - counts.get("skipped", 0)
    return {"files": files, "tried": tried, "rejected_clearly": counts.get("passed", 0), "pytest": tail}


def _straight(work: Path) -> tuple[Path, float, float]:
    """The uninterrupted run: its folder, the seconds to its first line (start-up) and to its end."""
    out, start = work / "straight", time.perf_counter()
    child = subprocess.Popen(
        fault_runs.train_command(out, KILL_RUN),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stderr is not None
    first = None
    for _ in child.stderr:
        first = first or time.perf_counter() - start
    if child.wait() != 0:
        raise RuntimeError(f"the straight run failed (exit {child.returncode})")
    return out, first or 0.0, time.perf_counter() - start


def _resume_and_compare(reference: Path, out: Path) -> dict:
    resumed = fault_runs.run_training(out, [*KILL_RUN, "checkpoint.resume=latest"])
    worst = fault_runs.max_differences(reference, out, 24) if resumed.returncode == 0 else {}
    diff = max(worst.values()) if worst else float("inf")
    return {"completed": resumed.returncode == 0, "max_abs_diff": diff, "equal": diff <= TOLERANCE}


def kills(count: int, work: Path, seed: int) -> dict:
    """Phase kills and `count` random-moment kills, each resumed and compared with the straight run."""
    reference, first, total = _straight(work)
    trials = []
    points = {
        "cache build": fault_runs.CACHE_WRITE,
        "step 7": fault_runs.STEP.format(n=7),
        "checkpoint write": fault_runs.CHECKPOINT_WRITE.format(n=3),
        "export": fault_runs.EXPORT_WRITE,
    }
    for phase, fault in points.items():
        out = work / f"phase-{len(trials)}"
        code = fault_runs.run_training(out, KILL_RUN, fault).returncode
        trials.append({"phase": phase, "killed": code == -9, **_resume_and_compare(reference, out)})
    for delay in fault_runs.random_delays(count, first, total, seed):
        out = work / f"random-{len(trials)}"
        code, _ = fault_runs.kill_at_random(out, KILL_RUN, delay)
        trial = {"phase": fault_runs.phase_of(out), "at_s": round(delay, 2), "killed": code == -9}
        trials.append({**trial, **_resume_and_compare(reference, out)})
    killed = [t for t in trials if t["killed"]]
    return {
        "straight_run_s": round(total, 1),
        "kills": len(killed),
        "survived": sum(t["completed"] for t in killed),
        "equal_to_straight": sum(t["equal"] for t in killed),
        "bit_exact": sum(t["max_abs_diff"] == 0 for t in killed),
        "trials": trials,
    }


def disk(work: Path) -> dict:
    outcomes = disk_full.run_all(work / "disk")
    return {
        "cases": len(outcomes),
        "clear_errors": sum(o.clear for o in outcomes),
        "outputs_lost": sum(not o.intact for o in outcomes),
        "checkpoints_lost": sum(not o.intact for o in outcomes if o.case.startswith("checkpoint")),
        "leftovers": sum(bool(o.leftovers) for o in outcomes),
        "outcomes": [o.__dict__ for o in outcomes],
    }


def threads_and_soak(thread_calls: int, soak_calls: int) -> tuple[dict, dict]:
    import torch

    from latentforge.models.components import Components

    torch.set_num_threads(1)
    components = Components.from_architecture("tiny", seed=0)
    components.unet.eval()
    runner = pipeline_load.Runner(components)
    start = time.perf_counter()
    warmup = max(soak_calls // 10, 20)
    soaked = pipeline_load.soak(runner, pipeline_load.make_calls(soak_calls, seed=1), warmup)
    soaked["seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    mismatches, worst = pipeline_load.thread_mismatches(
        runner, pipeline_load.make_calls(thread_calls, seed=2)
    )
    threaded = {"threads": 8, "calls": thread_calls, "mismatches": mismatches, "max_pixel_diff": worst}
    threaded["seconds"] = round(time.perf_counter() - start, 1)
    return threaded, soaked


def table(figures: dict) -> str:
    b, k, d, t, s = (figures[key] for key in ("bad_inputs", "kills", "disk_full", "threads", "soak"))
    rows = [
        ("check", "tried", "outcome"),
        (
            "bad inputs",
            str(b["tried"]),
            f"{b['rejected_clearly']} rejected clearly" + (f" ({b['note']})" if "note" in b else ""),
        ),
        (
            "kill -9 + resume=latest",
            f"{k['kills']} kills",
            f"{k['survived']} completed, {k['equal_to_straight']} equal to the straight run (<= {TOLERANCE:g}), "
            f"{k['bit_exact']} bit-exact",
        ),
        (
            "full disk (checkpoint/export)",
            f"{d['cases']} cases",
            f"{d['checkpoints_lost']} checkpoints lost, {d['outputs_lost']} outputs lost, {d['clear_errors']} clear "
            f"errors, {d['leftovers']} left files behind",
        ),
        (
            "threads x calls",
            f"{t['threads']} x {t['calls']}",
            f"{t['mismatches']} mismatches (max diff {t['max_pixel_diff']})",
        ),
        (
            "soak",
            f"{s['calls']} calls",
            f"RSS {s['rss_growth_pct']:+.2f}% after {s['warmup_calls']} warm-up calls "
            f"({s['rss_after_warmup_mb']:.0f} -> max {s['rss_max_after_warmup_mb']:.0f} MiB), fds {s['fd_growth']:+d}",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 random kills, 100 soak calls, 16 thread calls"
    )
    parser.add_argument(
        "--kills", type=int, default=10, help="random-moment kills (beside the 4 phase kills)"
    )
    parser.add_argument("--soak-calls", type=int, default=500)
    parser.add_argument("--thread-calls", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0, help="of the random kill moments")
    parser.add_argument("--json", type=Path, help="write the figures (and every trial) here")
    args = parser.parse_args()
    if args.quick:
        args.kills, args.soak_calls, args.thread_calls = 2, 100, 16
    start, figures = time.perf_counter(), {}
    figures["threads"], figures["soak"] = threads_and_soak(args.thread_calls, args.soak_calls)
    with tempfile.TemporaryDirectory(prefix="latentforge-reliability-") as work:
        figures["disk_full"] = disk(Path(work))
        figures["kills"] = kills(args.kills, Path(work), args.seed)
    figures["bad_inputs"] = bad_inputs()
    figures["seconds"] = round(time.perf_counter() - start, 1)
    print(table(figures))
    print(f"({figures['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
