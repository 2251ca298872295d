"""Where `generate`, `img2img` and `inpaint` write: -o FILE.png (several images: FILE-i.png and FILE-grid.png)
or -o FOLDER, A1111's way (numbered files NNNNN-SEED.png after the highest number there, and NNNNN-grid.png);
without -o, the folder `outputs`. Missing folders are made; an existing file is replaced only when asked."""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_FOLDER = "outputs"
_NUMBERED = re.compile(r"^(\d{5})-")


def output_paths(output: str | None, seeds: list[int], overwrite: bool) -> list[Path]:
    """A path per image (seed i -> path i), then the grid's when there are several images."""
    target = Path(output or DEFAULT_FOLDER)
    several = len(seeds) > 1
    if output is None or output.endswith(("/", "\\")) or target.is_dir() or not target.suffix:
        _check_folder(target)
        first = _next_number(target)
        paths = [target / f"{first + i:05d}-{seed}.png" for i, seed in enumerate(seeds)]
        grid = target / f"{first + len(seeds):05d}-grid.png"
    else:
        if target.suffix.lower() != ".png":
            raise ValueError(
                f"-o/--output must be a .png file (it carries the generation parameters) or a folder, got {target}"
            )
        _check_folder(target.parent)
        paths = (
            [target.with_name(f"{target.stem}-{i}.png") for i in range(len(seeds))] if several else [target]
        )
        grid = target.with_name(f"{target.stem}-grid.png")
    paths += [grid] if several else []
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output exists: {', '.join(existing)}; pass --overwrite to replace it")
    return paths


def _check_folder(folder: Path) -> None:
    """NotADirectoryError when `folder`, or the nearest part of it that exists, is a file; PermissionError when
    that part is not writable (found now, not after the model has loaded and drawn)."""
    for part in (folder, *folder.parents):
        if part.exists():
            if not part.is_dir():
                raise NotADirectoryError(
                    f"-o/--output: {part} is a file, not a folder; choose another output"
                )
            if not os.access(part, os.W_OK | os.X_OK):
                raise PermissionError(
                    f"-o/--output: the folder {part} is not writable; choose another output folder"
                )
            return


def _next_number(folder: Path) -> int:
    """One more than the highest NNNNN- prefix in `folder` (0 for a new or empty folder)."""
    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1
