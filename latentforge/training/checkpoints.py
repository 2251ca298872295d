"""Atomic, verifiable training checkpoints on top of `accelerator.save_state`.

Layout: `output_dir/checkpoints/checkpoint-<step>/` holds accelerate's state (models as safetensors,
optimizers, the sampler, one RNG file per process), the registered objects (EMA, LR schedulers) as
`objects.safetensors` (their tensors) + `objects.json` (the rest), `trainer_state.json` (step, data
position, counters) and, written last, `COMPLETE.json` (a manifest of every file with its size).
No file is unpickled with code execution: accelerate reads its optimizer/RNG files with
`torch.load(weights_only=True)`; we keep registered objects out of its `custom_checkpoint_*.pkl`, which it
would read with `weights_only=False` (older checkpoints that have them are read with `weights_only=True`).
A save goes to `checkpoints/.tmp-step-<step>/` and is renamed into place
only when complete, so a kill during a save never leaves a `checkpoint-N` that `resume=latest` would
pick (the failure mode of diffusers' scripts, see transformers#27820); old checkpoints are pruned only
after the new one is in place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from latentforge import atomic_files as atomic
from latentforge.training.all_processes import run_together
from latentforge.training.checkpoint_objects import OBJECTS_JSON as OBJECTS_JSON  # re-exported
from latentforge.training.checkpoint_objects import OBJECTS_TENSORS as OBJECTS_TENSORS  # re-exported
from latentforge.training.checkpoint_objects import load_objects, save_objects, without_legacy_pickles
from latentforge.training.run_dir import RunDir

logger = logging.getLogger(__name__)

MARKER = "COMPLETE.json"
STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-step-"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def _manifest(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def is_complete(folder: Path, num_processes: int | None = None) -> bool:
    """True when `folder` has its marker, every listed file with the listed size, and (if given) one RNG
    state per process (accelerate would otherwise resume silently without them)."""
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (json.JSONDecodeError, KeyError):
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    if num_processes is not None:
        return all(f"random_states_{i}.pkl" in files for i in range(num_processes))
    return True


def refuse_overwriting_checkpoints(output_dir: str | Path, resume: str) -> None:
    """Before anything is written: a run must not replace checkpoints it did not make. A fresh run (resume "")
    in an output_dir that holds checkpoints would replace them one by one and its pruning would mix the two
    runs; a run resumed from an explicit folder would do the same to the later checkpoints already there.
    FileExistsError naming the way out."""
    root = RunDir.of(output_dir).checkpoints
    existing = list_checkpoints(root)
    if not resume and existing:
        raise FileExistsError(
            f"{output_dir} already holds checkpoints (newest: {existing[-1][1].name}); continue that run with "
            "checkpoint.resume=latest, or give a new output_dir"
        )
    if resume and resume != "latest" and (match := _NAME.match(Path(resume).name)):
        later = [p.name for step, p in existing if step > int(match.group(1)) and is_complete(p)]
        if later:
            raise FileExistsError(
                f"checkpoint.resume={resume}: {output_dir} holds later checkpoints ({', '.join(later)}) that "
                "this run would replace as it reaches their steps; move them out of "
                f"{root} to branch from the older one, resume=latest to continue "
                "from the newest, or give a new output_dir"
            )


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-N` folder under `root`, oldest first (complete or not)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


class CheckpointManager:
    """Saves, finds, prunes and loads checkpoints of one run (all processes call save/load together)."""

    def __init__(self, accelerator: Accelerator, output_dir: str | Path, keep_last: int = 0) -> None:
        if keep_last < 0:
            raise ValueError(f"checkpoint.keep_last must be >= 0 (0 keeps all), got {keep_last}")
        self.accelerator = accelerator
        self.root = RunDir.of(output_dir).checkpoints
        self.keep_last = keep_last
        self.objects: list[Any] = []  # EMA, LR schedulers: anything with state_dict/load_state_dict
        if accelerator.is_main_process and self.root.is_dir():
            for stale in [*self.root.glob(TMP_PREFIX + "*"), *self.root.glob(".checkpoint-*")]:
                logger.warning("removing %s left by an interrupted save", stale)
                shutil.rmtree(stale, ignore_errors=True)
        accelerator.wait_for_everyone()

    def register(self, *objects: Any) -> None:
        """Checkpoint these objects too (instead of accelerator.register_for_checkpointing, which pickles);
        None (e.g. EMA switched off) is skipped."""
        self.objects.extend(obj for obj in objects if obj is not None)

    def save(self, step: int, state: dict[str, Any], models: list[torch.nn.Module]) -> Path:
        """Write checkpoint `step` atomically; `state` (JSON-able) goes to trainer_state.json."""
        for model in models:
            bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise RuntimeError(f"refusing to checkpoint step {step}: non-finite weights in {bad[:5]}")
        acc = self.accelerator
        tmp, final = self.root / f"{TMP_PREFIX}{step}", self.root / f"checkpoint-{step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        parts: list[Callable[[], Any]] = [
            lambda: acc.save_state(str(tmp)),  # every rank writes its own RNG state
            lambda: acc.is_main_process and self._finish(tmp, final, step, state),
        ]
        try:  # each part ends when every process is through it, and raises on all when it failed on one
            for part in parts:
                run_together(acc, part, f"checkpoint {step} to {self.root}", self._kept)
        except Exception:  # a full disk: no checkpoint-N; the earlier ones are untouched
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if acc.is_main_process:
            self._prune()
        acc.wait_for_everyone()
        return final

    def _finish(self, tmp: Path, final: Path, step: int, state: dict[str, Any]) -> None:
        """Add our files and the manifest to accelerate's state in `tmp`, flush, and rename it to `final`."""
        save_objects(self.objects, tmp)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        atomic.fsync_tree(tmp)
        marker = {"step": step, "num_processes": self.accelerator.num_processes, "files": _manifest(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        atomic.fsync(tmp / MARKER)
        atomic.fsync(tmp)
        # resume=latest skipped an incomplete `final` as unloadable (when resume names a folder, later complete
        # checkpoints are refused at the start: refuse_overwriting_checkpoints)
        atomic.replace_folder(tmp, final)

    def _kept(self) -> str:
        if not (complete := [p for _, p in list_checkpoints(self.root) if is_complete(p)]):
            return "the run has no earlier checkpoint"
        return f"the earlier checkpoints are intact (newest: {complete[-1].name}; continue with checkpoint.resume=latest)"

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        complete = [p for _, p in list_checkpoints(self.root) if is_complete(p)]
        for old in complete[: -self.keep_last]:
            doomed = (
                self.root / f"{TMP_PREFIX}pruned-{old.name}"
            )  # renamed first: never half-deleted in place
            os.replace(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    def resolve(self, resume: str) -> list[Path]:
        """Checkpoints to try for `resume` ("" = none, "latest", or a folder), best first."""
        if not resume:
            return []
        n = self.accelerator.num_processes
        if resume == "latest":
            candidates = [p for _, p in reversed(list_checkpoints(self.root))]
            good = [p for p in candidates if is_complete(p, n)]
            for skipped in candidates[: candidates.index(good[0])] if good else candidates:
                logger.warning("resume=latest: skipping incomplete checkpoint %s", skipped)
            return good
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(
                f"checkpoint.resume: {path} is not a folder (give 'latest' or a checkpoint)"
            )
        if not is_complete(path, n):
            raise ValueError(
                f"checkpoint.resume: {path} is incomplete (no valid {MARKER}, or saved with a different number "
                f"of processes than the {n} running now)"
            )
        return [path]

    def load(self, resume: str) -> dict[str, Any] | None:
        """Restore the newest loadable checkpoint for `resume`; its trainer_state.json, or None for a fresh run."""
        candidates = self.resolve(resume)
        for i, path in enumerate(candidates):
            try:
                with without_legacy_pickles(path) as view:
                    self.accelerator.load_state(str(view))
                load_objects(self.objects, path)
            except Exception as err:  # a corrupt file: fall back to the next older checkpoint
                if i + 1 == len(candidates) or resume != "latest":
                    raise
                logger.warning("could not load %s (%s); trying an older checkpoint", path, err)
                continue
            state = json.loads((path / STATE_FILE).read_text())
            self.accelerator.print(f"resumed from {path} at step {state['step']}")
            return state
        if resume == "latest":
            self.accelerator.print(f"resume=latest: no complete checkpoint in {self.root}; starting fresh")
        return None
