"""One training run: the step loop every trainer shares (`train_loop`) and its chores (`TrainingRun`): the
NaN/Inf guard, resume position and data epochs, corrupt-image accounting, progress bar, logging, checkpoints
and the end-of-run summary."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from latentforge.training import run_lock
from latentforge.training.accelerator import make_accelerator, refuse_sharding_without_cuda
from latentforge.training.checkpoints import CheckpointManager
from latentforge.training.image_counts import ImageCounts
from latentforge.training.optimization import OptimizerUpdate, check_optimizer, ema_weights
from latentforge.training.run_dir import RunDir
from latentforge.training.stopping import Interrupted, NonFiniteGuard, signals_ignored, sigterm_as_interrupt
from latentforge.training.train_config import TrainConfig


class TrainingRun:
    """The step loop's chores: resume position, data epochs, corrupt-image accounting, progress bar,
    logging and checkpoints; `dir` names the run's folders. Position = micro-batches consumed, so resume
    continues mid-epoch exactly."""

    def __init__(self, config: TrainConfig, name: str) -> None:
        """Start run `name` ("vae", "clip", "unet"): its accelerator (`make_accelerator`), checkpoints, guard."""
        check_optimizer(config.optim)  # before the accelerator writes anything
        refuse_sharding_without_cuda()  # before the lock creates output_dir
        run_lock.acquire(config.output_dir)  # before anything is written there
        accelerator = make_accelerator(config, name)
        self.config, self.accelerator, self.desc = config, accelerator, name
        self.dir = RunDir.of(config.output_dir)
        self.max_steps = config.optim.max_steps
        if self.max_steps < 1:
            raise ValueError(f"optim.max_steps must be >= 1, got {self.max_steps}")
        self.checkpoints = CheckpointManager(accelerator, self.dir.root, config.checkpoint.keep_last)
        self.guard = NonFiniteGuard(accelerator, config.max_nonfinite_steps)
        self.step = self.consumed = self.batches_per_epoch = 0
        self._step_consumed = 0  # micro-batches consumed when the last optimizer step ended
        self._saved_step = -1  # step of the last checkpoint written or resumed from
        self.extra_state: dict[str, Any] = {}  # trainer-specific JSON state, saved with each checkpoint
        self.images = ImageCounts(accelerator, config.data.max_corrupt_fraction)
        self._bar: tqdm | None = None
        self._t0 = time.perf_counter()
        self._seconds_before = 0.0  # training time of the segments before a resume, up to their checkpoint

    def resume(self, batches_per_epoch: int) -> None:
        """Load the checkpoint `checkpoint.resume` names (after accelerator.prepare and registering state)."""
        self.batches_per_epoch = batches_per_epoch
        if batches_per_epoch < 1:
            raise ValueError("the training data holds fewer samples than one batch; lower optim.batch_size")
        state = self.checkpoints.load(self.config.checkpoint.resume)
        if state is not None:
            if state["batches_per_epoch"] != batches_per_epoch:
                raise ValueError(
                    f"checkpoint.resume: the checkpoint had {state['batches_per_epoch']} batches per epoch, this "
                    f"run has {batches_per_epoch}; resume needs the same data, batch size and processes"
                )
            self.step, self.consumed = state["step"], state["consumed_batches"]
            self._step_consumed, self._saved_step = self.consumed, self.step
            self.guard.total = state["nonfinite_steps"]
            self.images.restored = state["images"]
            self.extra_state = state.get("extra", {})
            self._seconds_before = float(state.get("seconds", 0.0))
        if self.done and self.accelerator.is_main_process:
            print(
                f"nothing to train: the checkpoint is at step {self.step} and optim.max_steps={self.max_steps}; "
                "exporting it again (raise optim.max_steps to train on)"
            )
        self._bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            desc=self.desc,
            disable=not self.accelerator.is_main_process,
            dynamic_ncols=True,
        )

    @property
    def done(self) -> bool:
        return self.step >= self.max_steps

    def batches(self, dataloader: Any) -> Iterator[Any]:
        """Micro-batches from the current position on, epoch after epoch (the caller stops at `done`).

        A batch whose images were all unreadable (on any process) is consumed but not yielded. Nothing when
        the run is already done (resumed at max_steps: the trainer goes straight to its export)."""
        while not self.done:
            epoch, skip = divmod(self.consumed, self.batches_per_epoch)
            dataloader.set_epoch(epoch)
            # a shard stream (data.shards) starts at a batch without reading the batches before it
            skip_first = getattr(dataloader, "skip_first_batches", None)
            skip_first = skip_first or partial(self.accelerator.skip_first_batches, dataloader)
            active = skip_first(skip) if skip else dataloader
            active.set_epoch(epoch)
            for batch in active:
                self.consumed += 1
                if not self.images.add(batch):  # counted on every process; too many unreadable: all raise
                    yield batch

    def close(self) -> None:
        """Flush the trackers and leave the process group (after the export: it needs the barrier); unlock."""
        self.accelerator.end_training()
        run_lock.release(self.config.output_dir)

    def apply_updates(self, updates: list[OptimizerUpdate]) -> bool:
        """At the end of an accumulation window: apply each active update, unless a loss of the window was
        NaN/Inf (then nothing changes); zero the gradients either way. True when applied."""
        applied = self.guard.end_window(self.step + 1)
        if applied:
            for update in updates:
                if update.active(self.step):
                    update.apply(self.accelerator, self.config.optim.max_grad_norm)
        for update in updates:
            update.optimizer.zero_grad(set_to_none=True)
        return applied

    def end_step(self, logs: dict[str, float], models: list[torch.nn.Module]) -> None:
        """Bookkeeping after optimizer step `step + 1`: progress, logs, checkpoint."""
        self.step += 1
        assert self._bar is not None, "call resume() before the loop"
        self._bar.update(1)
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
        if self.step % self.config.log_every == 0 or self.step == self.max_steps:
            self.accelerator.log(logs, step=self.step)
        self._step_consumed = self.consumed
        every = self.config.checkpoint.every_steps
        if (every and self.step % every == 0) or self.step == self.max_steps:
            self.save_checkpoint(models)

    def save_checkpoint(self, models: list[torch.nn.Module]) -> Path:
        """Checkpoint the run at the last completed optimizer step (collective: call on all ranks)."""
        state = {
            "consumed_batches": self._step_consumed,
            "batches_per_epoch": self.batches_per_epoch,
            "nonfinite_steps": self.guard.total,
            "images": self.images.totals(),
            "extra": self.extra_state,
            "seconds": round(self.seconds, 1),
        }
        path, self._saved_step = self.checkpoints.save(self.step, state, models), self.step
        return path

    def interrupted(self, err: KeyboardInterrupt, models: list[torch.nn.Module]) -> Interrupted:
        """After Ctrl-C/SIGTERM: a checkpoint of the last completed step (one process; a second Ctrl-C or SIGTERM
        is ignored while it is written), and the line that says where the run stopped and how to continue."""
        if self._bar is not None:
            self._bar.close()
        code = getattr(err, "exit_code", 130)
        stopped = f"training stopped at step {self.step} of {self.max_steps}"
        if self.step > self._saved_step and self.step > 0 and self.accelerator.num_processes == 1:
            with signals_ignored(signal.SIGINT, signal.SIGTERM):
                where = f"saved {self.save_checkpoint(models)}"
        elif self._saved_step >= 0:
            where = f"its last checkpoint is step {self._saved_step} in {self.dir.root}"
        else:
            return Interrupted(f"{stopped}, before its first checkpoint", code)
        return Interrupted(f"{stopped}; {where}; continue with checkpoint.resume=latest", code)

    @property
    def seconds(self) -> float:
        """Wall-clock training time of the whole run: earlier segments up to their last checkpoint, then this one."""
        return self._seconds_before + time.perf_counter() - self._t0

    def rank_checksums(self, params: Iterable[torch.nn.Parameter]) -> list[float]:
        """Sum of squares of `params` on every process (collective). DDP keeps replicas equal; a difference
        means the processes diverged (e.g. a step skipped on one rank only), and raises."""
        params = list(params)
        local = (
            torch.stack([p.detach().double().pow(2).sum() for p in params]).sum()
            if params
            else torch.zeros(())
        )
        sums = self.accelerator.gather(local.float().reshape(1).to(self.accelerator.device)).tolist()
        if max(sums) - min(sums) > 1e-6 * max(1.0, abs(max(sums))):
            raise RuntimeError(f"the {len(sums)} processes ended with different weights (checksums {sums})")
        return sums

    def finish(self, params: Iterable[torch.nn.Parameter] = ()) -> dict[str, Any]:
        """Close the bar; a summary of the run (collective: call on all ranks, then export, then `close`)."""
        if self._bar is not None:
            self._bar.close()
        checksums = self.rank_checksums(params)
        counts = self.images.totals()
        if counts["corrupt"]:
            self.accelerator.print(
                f"skipped {counts['corrupt']} unreadable image(s) of {counts['seen']} loaded "
                f"({counts['empty_batches']} batch(es) had none left)"
            )
        return {
            "steps": self.step,
            "nonfinite_steps_skipped": self.guard.total,
            "images_seen": counts["seen"],
            "corrupt_images_skipped": counts["corrupt"],
            "seconds": round(self.seconds, 1),
            "weight_checksum_per_process": checksums,
        }


Backward = Callable[[torch.Tensor], None]


@dataclass
class Trainer:
    """What one trainer brings to `train_loop`: its step, optimizers, models and validation."""

    # one micro-batch: forward, each loss through the given backward (it checks it first), scalars to log
    train_step: Callable[[Any, Backward], dict[str, Any]]
    updates: list[OptimizerUpdate]  # the first one's learning rate is logged as "lr"
    prepared: list[torch.nn.Module]  # the models accelerator.prepare returned (gradient accumulation)
    saved: list[torch.nn.Module]  # the models whose weights must be finite at a checkpoint
    validate: Callable[[int], dict[str, Any] | None]  # metrics/images at a step (collective)

    @contextmanager
    def in_ema_weights(self) -> Iterator[None]:
        """The EMA weights of every update that has one swapped in for the block (`ema_weights`)."""
        with ExitStack() as stack:
            for update in self.updates:
                stack.enter_context(ema_weights(update.ema, update.params))
            yield

    def keep_ema_weights(self) -> None:
        """Replace the trained weights by their EMA for good (export, checksums)."""
        for update in self.updates:
            if update.ema is not None:
                update.ema.copy_to(update.params)


def train_loop(run: TrainingRun, loader: Any, trainer: Trainer) -> dict[str, Any]:
    """The step loop of every trainer, from the run's position (`run.resume` first) to optim.max_steps:
    gradient accumulation, the NaN/Inf guard (each loss checked before its backward; a window with a bad one
    applies no update), the optimizer updates, progress/logs/checkpoints (`end_step`) and `validate` every
    validation.every_steps with the EMA weights in. Then the EMA weights replace the trained ones for good and
    the last validation runs; returns its metrics. Ctrl-C or SIGTERM saves a checkpoint and raises
    `Interrupted` (`TrainingRun.interrupted`)."""

    def backward(loss: torch.Tensor) -> None:
        if run.guard.check(loss):
            run.accelerator.backward(loss)

    with sigterm_as_interrupt():
        try:
            _steps(run, loader, trainer, backward)
        except KeyboardInterrupt as err:
            raise run.interrupted(err, trainer.saved) from None
    trainer.keep_ema_weights()
    return trainer.validate(run.step) or {}


def _steps(run: TrainingRun, loader: Any, trainer: Trainer, backward: Backward) -> None:
    """Optimizer steps from the run's position to optim.max_steps, validating every validation.every_steps."""
    accelerator, every = run.accelerator, run.config.validation.every_steps
    for batch in run.batches(loader):
        with accelerator.accumulate(*trainer.prepared):
            logs = trainer.train_step(batch, backward)
            if accelerator.sync_gradients:
                run.apply_updates(trainer.updates)
        if accelerator.sync_gradients:
            logs = {k: float(v) for k, v in logs.items()}
            logs["lr"] = trainer.updates[0].scheduler.get_last_lr()[0]
            run.end_step(logs, trainer.saved)
            if every and run.step % every == 0 and not run.done:
                with trainer.in_ema_weights():
                    trainer.validate(run.step)
            if run.done:
                break
