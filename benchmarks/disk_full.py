"""A full disk while a checkpoint or an export is written, in-process: the kernel refusing to grow a file
(RLIMIT_FSIZE: every writer, safetensors and torch.save included, gets EFBIG as from a full disk) or an
injected ENOSPC. Each case writes an output once, fails to write it again, and reports whether the error was
clear, the earlier output intact and nothing half-written left beside it.

Used by tests/test_reliability_exports.py and benchmarks/reliability.py.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import resource
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch


@dataclasses.dataclass
class Outcome:
    case: str
    error: str  # the message the user saw ("" when the write did not fail)
    clear: bool  # it says what was not written and that the earlier output is intact
    intact: bool  # the earlier output is byte for byte as it was (a checkpoint: still resumes)
    leftovers: list[str]  # hidden temporary files or folders left beside the output


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Writes past `nbytes` in any file fail with EFBIG (SIGXFSZ ignored) inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file at `path` (a file or a folder), by relative name."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f.relative_to(path.parent)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _attempt(case: str, target: Path, write: Callable[[], object], fail: Callable) -> Outcome:
    """`write()` once, then again under `fail` (a context manager); the outcome of the second."""
    write()
    before = snapshot(target)
    error = ""
    try:
        with fail():
            write()
    except Exception as err:  # noqa: BLE001 (what the user would see, whatever it is)
        error = f"{type(err).__name__}: {err}"
    leftovers = sorted(p.name for p in target.parent.glob(f".{target.name}*"))
    clear = error.startswith("OSError: could not write") and "is unchanged" in error
    return Outcome(case, error, clear, snapshot(target) == before, leftovers)


def _components():
    from latentforge.models.components import Components

    return Components.from_architecture("tiny", seed=0)


def diffusers_folder(tmp: Path, fail) -> Outcome:
    components, target = _components(), tmp / "model"
    return _attempt(
        "diffusers folder", target, lambda: components.save_pretrained(target, overwrite=True), fail
    )


def single_file(tmp: Path, fail) -> Outcome:
    components, target = _components(), tmp / "model.safetensors"
    return _attempt("single file", target, lambda: components.save_single_file(target, overwrite=True), fail)


def unet_run_export(tmp: Path, fail, lora_rank: int = 0) -> Outcome:
    """The U-Net trainer's export (`export_unet_run`): a full model, or its LoRA files."""
    from latentforge.config_loader import load_config
    from latentforge.resources import config_file
    from latentforge.training.lora import add_lora
    from latentforge.training.run_dir import RunDir
    from latentforge.training.stage_configs import UNetTrainConfig
    from latentforge.training.unet_export import export_unet_run

    config = load_config(
        UNetTrainConfig, config_file("train", "smoke-unet"), [f"output_dir={tmp}", f"lora.rank={lora_rank}"]
    )
    components = _components()
    if lora_rank:
        add_lora(components.unet, config.lora)
    run = SimpleNamespace(dir=RunDir.of(tmp))
    tmp.mkdir(parents=True, exist_ok=True)
    run.dir.config.write_text("output_dir: run\n")
    main = SimpleNamespace(is_main_process=True, print=lambda *a: None, wait_for_everyone=lambda: None)
    target = run.dir.lora if lora_rank else run.dir.model
    name = "LoRA export (training)" if lora_rank else "model export (training)"
    metrics = {"steps": 1, "seconds": 1.0}
    return _attempt(
        name, target, lambda: export_unet_run(main, components, config, run, metrics, (1, 0)), fail
    )


def checkpoint(tmp: Path, fail) -> Outcome:
    """A run's second checkpoint fails; the first must still load (`CheckpointManager`)."""
    from accelerate import Accelerator

    from latentforge.training.checkpoints import CheckpointManager

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    manager = CheckpointManager(accelerator, tmp)
    manager.save(1, {"consumed_batches": 1}, [model])
    first = manager.root / "checkpoint-1"
    before = snapshot(first)
    error = ""
    try:
        with fail():
            manager.save(2, {"consumed_batches": 2}, [model])
    except Exception as err:  # noqa: BLE001
        error = f"{type(err).__name__}: {err}"
    leftovers = sorted(p.name for p in manager.root.iterdir() if p.name != first.name)
    resumed = manager.load("latest")
    intact = snapshot(first) == before and resumed is not None and resumed["step"] == 1
    clear = error.startswith("OSError: could not write checkpoint 2") and "newest: checkpoint-1" in error
    return Outcome("checkpoint", error, clear, intact, leftovers)


CASES = {
    "checkpoint": checkpoint,
    "diffusers folder": diffusers_folder,
    "single file": single_file,
    "model export (training)": unet_run_export,
    "LoRA export (training)": lambda tmp, fail: unet_run_export(tmp, fail, lora_rank=4),
}
# two ways to fill the disk: the kernel's file-size limit (a real failed write) and an injected ENOSPC
FAULTS = {
    "file size limit (EFBIG)": lambda: file_size_limit(4096),
    "ENOSPC in safetensors": lambda: mock.patch("safetensors.torch.serialize_file", no_space),
}


def run_all(tmp: Path) -> list[Outcome]:
    """Every case under every fault, each in its own folder under `tmp`."""
    outcomes = []
    for i, (fault_name, fault) in enumerate(FAULTS.items()):
        for j, case in enumerate(CASES.values()):
            outcome = case(tmp / f"{i}-{j}", fault)
            outcome.case = f"{outcome.case}, {fault_name}"
            outcomes.append(outcome)
    return outcomes
