"""How the built-in synthetic datasets (shapes, emoji) write their rows: images as PNG-encoded `datasets`
image values, captions with the right English article."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def png_image_value(image: Image.Image) -> dict[str, Any]:
    """`image` as a `datasets.Image` value of PNG bytes: pre-encoded bytes + `Dataset.from_dict` is ~10x faster
    than letting `datasets` encode PIL images row by row; flat colours compress well even at level 1."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def indefinite_article(word: str) -> str:
    """ "an" before a vowel, else "a" (enough for the colour, size and shape words of the built-in datasets)."""
    return "an" if word[0].lower() in "aeiou" else "a"
