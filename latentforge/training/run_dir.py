"""The folders of one training run, all under its config's `output_dir`: the one place that names them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """`root` (a config's output_dir) and what a run writes there; make one with `RunDir.of(output_dir)`."""

    root: Path
    config: Path  # config.yaml: the run's full config, written as it starts
    logs: Path  # logs/: TensorBoard event files
    checkpoints: Path  # checkpoints/checkpoint-<step>/ (see latentforge.training.checkpoints)
    cache: Path  # cache/<key>/: the U-Net trainer's latent cache
    validation: Path  # validation/step-<step>.png: images made during training
    model: Path  # model/: the export
    lora: Path  # lora/: the exported LoRA weights (U-Net trainer with lora.rank > 0)

    @classmethod
    def of(cls, output_dir: str | Path) -> RunDir:
        root = Path(output_dir)
        return cls(
            root=root,
            config=root / "config.yaml",
            logs=root / "logs",
            checkpoints=root / "checkpoints",
            cache=root / "cache",
            validation=root / "validation",
            model=root / "model",
            lora=root / "lora",
        )
