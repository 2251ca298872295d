"""A deterministic object detector for the `shapes` world: colour segmentation + shape classification.

It reads back what `latentforge.data.shapes.render_scene` draws (and what a model trained on it should
draw): the background is the most common named colour on the image border; every other pixel takes the
nearest named colour (RGB distance to `COLORS`); each colour's connected regions are objects, and an
object's shape comes from two rotation-invariant measurements of its pixel mask:

- solidity = area / convex-hull area: ~1 for convex shapes, ~0.5 for a five-pointed star;
- disc fill = area / (pi * R^2), R = largest distance from the centroid to the mask's pixel corners:
  circle 1.0, square 2/pi = 0.64, triangle 0.36-0.41 (equilateral 3*sqrt(3)/(4*pi)).

The shapes world draws triangles point up. Rounded by a VAE or a blur, a small triangle's tips shrink, its
disc fill rises to a square's, and a person still sees a triangle: it is wide at the bottom and narrow at
the top, which no square, circle or star is. So a mask read as a square whose row width at 80% of its height
is more than TRIANGLE_MIN_TAPER times the width at 20% is a triangle (objects_kept of the shipped VAE on 256
held-out scenes: 0.566 -> 0.625; blur sigma 1: 0.898 -> 0.957; JPEG 90: 0.984 -> 0.996; clean renders 1.0).

How cleanly an object is drawn is its `fit` (`shape_fit`): its class's ideal shape is drawn in its bounding
box (`shapes.shape_mask`, as the scenes draw it), and the fit is the smaller of two shares: of the mask's
pixels within one pixel (at 64 px) of the ideal, and of the ideal's pixels within one pixel of the mask.
Renders fit at 0.97 and more, blurred ones (sigma 1) at 0.9; a ragged blob, which the classifier still has
to call something, fits less (`CLEAN_MIN_FIT`; measured margins in tests/test_detector.py).
Antialiased edges blend two colours into a third (red on blue gives purple): such thin rings have no
3x3 interior, which is how they are told apart from objects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from latentforge.data.shapes import COLORS, shape_mask

# Thresholds sit midway between the ideal values of neighbouring classes (see module docstring);
# measured margins on ground-truth renders are in tests/test_detector.py.
STAR_MAX_SOLIDITY = 0.78
CIRCLE_MIN_DISC_FILL = 0.75
SQUARE_MIN_DISC_FILL = 0.50
CLEAN_MIN_FIT = 0.9  # an object whose fit is at least this is a cleanly drawn shape
TRIANGLE_MIN_TAPER = 2.0  # upright triangle: bottom/top row width 4 ideally; square, circle 1
WORK_SIZE = 64  # smaller images are upsampled to at least this many pixels per side
MIN_AREA_FRACTION = 0.004  # smallest object, as a fraction of the image area (16 px at 64x64)


@dataclass(frozen=True)
class DetectedObject:
    """One object read from an image; box = (x0, y0, x1, y1) in pixels, x1/y1 exclusive."""

    shape: str
    color: str
    box: tuple[int, int, int, int]
    area: int
    fit: float = 1.0  # how close it is to the ideal `shape` (`shape_fit`; 1.0: made by hand, not detected)

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) centre of the box in pixels."""
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class Detection:
    """Everything read from one image: the background colour name and the objects on it."""

    background: str
    objects: tuple[DetectedObject, ...]

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        """Number of objects with this shape and/or colour (None = any)."""
        return len(self.find(shape, color))

    def find(self, shape: str | None = None, color: str | None = None) -> list[DetectedObject]:
        """Objects with this shape and/or colour (None = any), largest first."""
        return [o for o in self.objects if shape in (None, o.shape) and color in (None, o.color)]


def _default_palette() -> dict[str, tuple[int, int, int]]:
    return dict(COLORS)


def nearest_color_labels(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour per pixel. pixels: (H, W, 3) in [0, 255]; palette: (K, 3)."""
    diff = pixels[:, :, None, :].astype(np.float32) - palette[None, None].astype(np.float32)
    return np.einsum("hwkc,hwkc->hwk", diff, diff).argmin(axis=-1)


def classify_shape(mask: np.ndarray) -> str:
    """'circle', 'square', 'triangle' or 'star' for a filled binary mask (H, W) of one object."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    # pixel corners, not centres: a filled n x n square then has hull area n^2, exactly its pixel count
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    try:
        hull_area = ConvexHull(corners).volume  # in 2-D, `volume` is the enclosed area
    except QhullError:  # a single row or column of pixels: no 2-D hull
        return "square"
    if area / hull_area < STAR_MAX_SOLIDITY:
        return "star"
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    radius_sq = ((corners[:, 0] - cx) ** 2 + (corners[:, 1] - cy) ** 2).max()
    disc_fill = area / (math.pi * radius_sq)
    if disc_fill >= CIRCLE_MIN_DISC_FILL:
        return "circle"
    if disc_fill < SQUARE_MIN_DISC_FILL or taper(mask) > TRIANGLE_MIN_TAPER:
        return "triangle"
    return "square"


def shape_fit(mask: np.ndarray, shape: str, tolerance: int = 1) -> float:
    """How close a filled mask (H, W) is to `shape` drawn in the mask's box: the smaller of the shares of mask
    pixels within `tolerance` px of the ideal shape and of ideal pixels within `tolerance` px of the mask."""
    from scipy import ndimage

    ideal = shape_mask(shape, mask.shape[1], mask.shape[0])
    if not ideal.any() or not mask.any():
        return 0.0
    near_ideal = ndimage.binary_dilation(ideal, iterations=tolerance)
    near_mask = ndimage.binary_dilation(mask, iterations=tolerance)
    return float(min((mask & near_ideal).sum() / mask.sum(), (ideal & near_mask).sum() / ideal.sum()))


def taper(mask: np.ndarray) -> float:
    """Width of the mask's row at 80% of its height over the width at 20% (point-up triangle ~4, square 1)."""
    rows = np.nonzero(mask.any(axis=1))[0]
    height = rows[-1] - rows[0] + 1
    top, bottom = (int(mask[rows[0] + int(f * height)].sum()) for f in (0.2, 0.8))
    return bottom / max(top, 1)


def detect_objects(
    image: Image.Image | np.ndarray,
    palette: Mapping[str, tuple[int, int, int]] | None = None,
    min_area_fraction: float = MIN_AREA_FRACTION,
) -> Detection:
    """Background colour and objects (largest first) of an RGB image: PIL or uint8 array (H, W, 3)."""
    from scipy import ndimage

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image array must be uint8 with shape (H, W, 3), got {image.dtype} {image.shape}"
            )
        image = Image.fromarray(image)
    image = image.convert("RGB")
    # Below WORK_SIZE px, shapes are a few pixels wide and the ones lost to antialiasing decide the
    # class; bicubic upsampling first turns the antialiased edges into sub-pixel boundaries.
    scale = max(1, math.ceil(WORK_SIZE / min(image.size)))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BICUBIC)
    pixels = np.asarray(image)
    if not 0 < min_area_fraction < 1:
        raise ValueError(f"min_area_fraction must be in (0, 1), got {min_area_fraction}")
    palette = dict(palette or _default_palette())
    names = list(palette)
    labels = nearest_color_labels(pixels, np.array([palette[n] for n in names]))
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    background = int(np.bincount(border, minlength=len(names)).argmax())
    min_area = max(4, math.ceil(min_area_fraction * labels.size))
    tolerance = max(1, round(min(labels.shape) / WORK_SIZE))  # shape_fit's one pixel at 64 px
    square3 = np.ones((3, 3), dtype=bool)

    objects = []
    for index in np.unique(labels):
        if index == background:
            continue
        components, _ = ndimage.label(labels == index)
        areas = np.bincount(components.ravel())
        for component, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None or areas[component] < min_area:
                continue
            mask = components[box] == component
            if not ndimage.binary_erosion(mask, square3, iterations=scale).any():
                continue  # no 3x3 interior: an antialiasing ring or speckle, not an object
            mask = ndimage.binary_fill_holes(mask)
            ys, xs = box
            shape = classify_shape(mask)
            objects.append(
                DetectedObject(
                    shape=shape,
                    color=names[index],
                    box=(xs.start // scale, ys.start // scale, -(-xs.stop // scale), -(-ys.stop // scale)),
                    area=int(mask.sum()) // scale**2,
                    fit=shape_fit(mask, shape, tolerance),
                )
            )
    objects.sort(key=lambda o: -o.area)
    return Detection(background=names[background], objects=tuple(objects))
