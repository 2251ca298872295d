"""Re-read saved compositional reports with the current detector: clean shapes and object fit of their grids.

A compositional report keeps its prompts (the JSON rows) and the first images in its grid (the PNG, at most
`MAX_GRID_IMAGES`). This script cuts those images out of the grid and reads them again, so that reports
written before a reading existed (`clean_shapes`, `object_fit`) can be compared with new ones, model by
model, on the same prompts and seeds. Each argument is LABEL=FOLDER[,FOLDER...] (the reports of one model,
one per eval seed); one line per label: images, objects, object fit, share of objects fitting at least
CLEAN_MIN_FIT, clean shapes, exact count (as many objects as named), and on the single-object prompts the objects read per image and the share of
images with exactly one (spurious extra objects fail those prompts however well each is drawn).

    python benchmarks/regrade_grids.py recipe-1500=runs/ablations/recipe-1500/eval-seed0,runs/ablations/recipe-1500/eval-seed1
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from latentforge.evaluation.compositional import CompositionalPrompt, score_images
from latentforge.evaluation.detector import CLEAN_MIN_FIT
from latentforge.evaluation.report import GRID_BORDER, MAX_GRID_IMAGES


def grid_images(folder: Path, name: str = "compositional") -> tuple[list[dict], list[Image.Image]]:
    """(the report's rows, its grid's images cut out), the rows cut to the images the grid shows."""
    rows = json.loads((folder / f"{name}.json").read_text())["rows"]
    grid = Image.open(folder / f"{name}.png").convert("RGB")
    count = min(MAX_GRID_IMAGES, len(rows))
    columns = math.ceil(math.sqrt(count))
    cell = grid.width // columns
    side = cell - 2 * GRID_BORDER
    images = [
        grid.crop((x + GRID_BORDER, y + GRID_BORDER, x + GRID_BORDER + side, y + GRID_BORDER + side))
        for i in range(count)
        for x, y in [((i % columns) * cell, (i // columns) * cell)]
    ]
    return rows[:count], images


def regrade(folders: list[Path]) -> dict[str, float]:
    """Images, objects, object fit, share of objects with fit >= CLEAN_MIN_FIT, clean shapes, exact count, and objects per
    image and share with exactly one on single-object prompts, over the grids of `folders`."""
    prompts, images = [], []
    for folder in folders:
        rows, cut = grid_images(folder)
        prompts += [CompositionalPrompt(row["prompt"], row["category"]) for row in rows]
        images += cut
    result = score_images(prompts, images)  # the benchmark's own readings of each image
    fits = [o.fit for detection in result.detections for o in detection.objects]
    single = [len(d.objects) for p, d in zip(prompts, result.detections) if p.category == "single_object"]
    return {
        "images": len(images),
        "objects": len(fits),
        "object_fit": float(np.mean(fits)) if fits else 0.0,
        "clean_objects": float(np.mean(np.array(fits) >= CLEAN_MIN_FIT)) if fits else 0.0,
        "clean_shapes": float(np.mean(result.clean)) if images else 0.0,
        "exact_count": float(np.mean(result.exact)) if images else 0.0,
        "single_objects": float(np.mean(single)) if single else 0.0,
        "single_exactly_one": float(np.mean(np.array(single) == 1)) if single else 0.0,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="LABEL=FOLDER[,FOLDER...]: one model's report folders")
    args = parser.parse_args(argv)
    for model in args.models:
        label, sep, folders = model.partition("=")
        if not sep:
            parser.error(f"{model!r}: give LABEL=FOLDER[,FOLDER...]")
        scores = regrade([Path(f) for f in folders.split(",")])
        print(
            f"{label}: {scores['images']} images, {scores['objects']} objects, object fit "
            f"{scores['object_fit']:.3f}, objects fitting >= {CLEAN_MIN_FIT} {scores['clean_objects']:.3f}, "
            f"clean shapes {scores['clean_shapes']:.3f}, exact count {scores['exact_count']:.3f}; single-object prompts: "
            f"{scores['single_objects']:.2f} objects per image, exactly one {scores['single_exactly_one']:.2f}"
        )


if __name__ == "__main__":
    main()
