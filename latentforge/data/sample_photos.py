"""Real photographs for tests and demos, from the ones scikit-image ships (`skimage.data`, public domain or
CC0, see its docs): a small captioned photo set at the photos' own, mostly non-square sizes, and a few views of
one cat for DreamBooth. Needs scikit-image (`pip install scikit-image`; in the dev extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# name in skimage.data -> caption; plus crops that make portrait shapes
PHOTOS = {
    "chelsea": "a photo of a cat",
    "coffee": "a photo of a cup of coffee",
    "rocket": "a photo of a rocket on its launch pad",
    "astronaut": "a portrait photo of an astronaut",
    "hubble_deep_field": "a photo of galaxies in deep space",
    "camera": "a black and white photo of a cameraman",
    "coins": "a black and white photo of old coins",
}


def _photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError as err:
        raise ImportError("the sample photos come from scikit-image: pip install scikit-image") from err
    image = getattr(data, name)()
    return np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]


def write_photo_set(folder: str | Path) -> list[Path]:
    """The captioned photo set in kohya's layout (`<name>.png` + `<name>.txt`): the photos of `PHOTOS` and two
    portrait crops (astronaut, coffee). Returns the image files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = {name: (_photo(name), caption) for name, caption in PHOTOS.items()}
    images["astronaut_portrait"] = (_photo("astronaut")[:, 128:384], "a portrait photo of an astronaut")
    images["coffee_portrait"] = (_photo("coffee")[:, 150:417], "a photo of a cup of coffee")
    files = []
    for name, (pixels, caption) in images.items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(caption)
        files.append(folder / f"{name}.png")
    return files


def write_cat_views(folder: str | Path) -> list[Path]:
    """Four views of one cat (scikit-image's `chelsea`, 451x300): whole, left and right crops, mirrored; no
    captions (a DreamBooth instance folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cat = _photo("chelsea")
    views = [cat, cat[:, :340], cat[:, 110:], cat[:, ::-1]]
    files = [folder / f"cat-{i}.png" for i in range(len(views))]
    for file, view in zip(files, views):
        Image.fromarray(np.ascontiguousarray(view)).save(file)
    return files
