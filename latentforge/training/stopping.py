"""How a training run stops early: the NaN/Inf guard (`NonFiniteGuard`: skip bad steps, stop a diverged
run) and Ctrl-C/SIGTERM (`Interrupted`, after the run saved a checkpoint; `sigterm_as_interrupt`)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import Accelerator

logger = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run (after saving a checkpoint where it could): the message says where
    it stopped and how to continue; `exit_code` is the shell's (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Terminated(KeyboardInterrupt):
    exit_code = 143  # 128 + SIGTERM, as the shell reports a process that SIGTERM ended


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the block like Ctrl-C (so the run can save a checkpoint); main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_ignored(*signums: int) -> Iterator[None]:
    """The block runs with these signals ignored (a second Ctrl-C must not cut the checkpoint it writes)."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class NonFiniteGuard:
    """Skips optimizer steps whose loss is NaN/Inf on any process, counts them, and stops the run after
    `limit` in a row (a diverged run, not a stray batch). All processes take the same decision."""

    def __init__(self, accelerator: Accelerator, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {limit}")
        self.accelerator, self.limit = accelerator, limit
        self.total = self.in_a_row = 0
        self._window_bad = False

    def check(self, loss: torch.Tensor) -> bool:
        """True when `loss` is finite on every process (call for each loss, before its backward)."""
        flag = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=loss.device)
        bad = bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)
        self._window_bad |= bad
        return not bad

    def end_window(self, step: int) -> bool:
        """Call at each optimizer step: True to apply it, False to skip it; raises after `limit` in a row."""
        bad, self._window_bad = self._window_bad, False
        if not bad:
            self.in_a_row = 0
            return True
        self.total += 1
        self.in_a_row += 1
        logger.warning("step %d: non-finite loss, update skipped (%d in a row)", step, self.in_a_row)
        if self.in_a_row >= self.limit:
            raise RuntimeError(
                f"training diverged: {self.in_a_row} optimizer steps in a row had a NaN/Inf loss (up to step "
                f"{step}); lower optim.learning_rate, use mixed_precision=no or bf16, or resume from an earlier "
                f"checkpoint (max_nonfinite_steps={self.limit})"
            )
        return False
