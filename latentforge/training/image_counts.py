"""The run's image accounting: images loaded, unreadable and batches left empty, summed over every process
after each batch, so every process decides from the same totals (a process that stopped alone, say on a bad
shard of its own, would leave the others waiting forever in their next collective)."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator

MIN_SEEN = 50  # images loaded before the unreadable fraction is judged (a few bad files early prove nothing)


def check_corrupt_fraction(seen: int, corrupt: int, limit: float) -> None:
    """ValueError when more than `limit` of the `seen` images (all processes) could not be read."""
    if seen >= MIN_SEEN and corrupt > limit * seen:
        raise ValueError(
            f"data: {corrupt} of {seen} images could not be read (more than "
            f"data.max_corrupt_fraction={limit}); check the dataset files"
        )


class ImageCounts:
    """Images seen / unreadable and empty batches of every process; since start or resume (`add`), and with
    the counts a resumed checkpoint brought (`totals`)."""

    def __init__(self, accelerator: Accelerator, max_corrupt_fraction: float) -> None:
        self.accelerator, self.limit = accelerator, max_corrupt_fraction
        self.seen = self.corrupt = self.empty = 0
        self.restored = {"seen": 0, "corrupt": 0, "empty_batches": 0}

    def add(self, batch: dict[str, Any]) -> bool:
        """Count one micro-batch of every process (collective: call on all ranks); True when a process's batch
        had no readable image (every process then skips it). ValueError on every process when too many
        images were unreadable."""
        size = int(batch["pixel_values"].shape[0]) if "pixel_values" in batch else len(batch["index"])
        skipped = int(batch.get("skipped", 0))
        local = torch.tensor([size + skipped, skipped, int(size == 0)], device=self.accelerator.device)
        seen, corrupt, empty = (int(v) for v in self.accelerator.reduce(local, reduction="sum").tolist())
        self.seen, self.corrupt, self.empty = self.seen + seen, self.corrupt + corrupt, self.empty + empty
        check_corrupt_fraction(self.seen, self.corrupt, self.limit)
        return empty > 0

    def totals(self) -> dict[str, int]:
        """Whole run, all processes: {"seen", "corrupt", "empty_batches"} (the same on every process)."""
        r = self.restored
        return {
            "seen": r["seen"] + self.seen,
            "corrupt": r["corrupt"] + self.corrupt,
            "empty_batches": r["empty_batches"] + self.empty,
        }
