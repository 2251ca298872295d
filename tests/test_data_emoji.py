"""Tests of the built-in emoji dataset (Noto Color Emoji glyphs with CLDR captions)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from latentforge.data import emoji as E
from latentforge.data.shapes import COLORS

needs_font = pytest.mark.skipif(
    not E.FONT_PATH.is_file(), reason=f"{E.FONT_PATH} missing: sudo apt-get install fonts-noto-color-emoji"
)


@pytest.mark.parametrize(
    "short, char, expected",
    [
        (":red_apple:", "🍎", "red apple"),
        (":thumbs_up_medium_skin_tone:", "👍🏽", "thumbs up: medium skin tone"),
        (":woman_medium_skin_tone_red_hair:", "", "woman: medium skin tone, red hair"),
        (
            ":kiss_woman_woman_medium_skin_tone_light_skin_tone:",
            "",
            "kiss woman woman: medium skin tone, light skin tone",
        ),
        (":keycap_1:", "1️⃣", "keycap: 1"),
        (":Japan:", "🇯🇵", "flag: Japan"),
    ],
)
def test_cldr_names(short, char, expected):
    assert E.cldr_name(short, char) == expected


def test_names_table():
    names = E.emoji_names()
    assert names["🍎"] == "red apple" and names["🐱"] == "cat face"
    assert names["👍🏽"] == "thumbs up: medium skin tone"
    no_tones = E.emoji_names(skin_tones=False)
    assert "👍🏽" not in no_tones and "👍" in no_tones and len(no_tones) < len(names)


def test_missing_font_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="fonts-noto-color-emoji"):
        E._font(Path(tmp_path / "NotoColorEmoji.ttf"))


@needs_font
def test_render_skips_what_the_font_cannot_draw():
    apple = E.render_emoji("🍎", 32)
    assert apple is not None and apple.mode == "RGBA" and max(apple.size) == 32
    assert np.asarray(apple)[..., 3].max() == 255
    assert E.render_emoji("A", 32) is None  # no glyph: blank
    assert E.render_emoji("🍎\u200d🍎", 32) is None  # a sequence the font cannot join: two glyphs


@needs_font
def test_plain_dataset_is_reproducible():
    a, b = E.emoji_dataset(6, seed=3, size=32), E.emoji_dataset(6, seed=3, size=32)
    assert a.column_names == ["image", "text"] and len(a) == 6
    assert a["text"] == b["text"] and a["text"] != E.emoji_dataset(6, seed=4, size=32)["text"]
    assert set(a["text"]) <= set(E.emoji_names().values())
    pixels = np.asarray(a[0]["image"])
    assert pixels.shape == (32, 32, 3) and tuple(pixels[0, 0]) == (255, 255, 255)
    assert np.array_equal(pixels, np.asarray(b[0]["image"]))
    with pytest.raises(ValueError, match="num_samples"):
        E.emoji_dataset(0)


@needs_font
def test_placement_captions_match_the_image():
    pattern = re.compile(
        r"an? (small|medium|large) (.+) (" + "|".join(E.POSITIONS) + r") on an? (\w+) background"
    )
    ds = E.emoji_dataset(40, seed=0, size=64, placement=True)
    names = set(E.emoji_names().values())
    for row in ds:
        scale, name, position, background = pattern.fullmatch(row["text"]).groups()
        assert name in names
        pixels = np.asarray(row["image"]).astype(int)
        glyph = np.abs(pixels - np.array(COLORS[background])).sum(-1) > 30
        ys, xs = np.nonzero(glyph)
        assert glyph.sum() > 0
        side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
        assert side <= round(E.SCALES[scale] * 64) + 1
        # the glyph's centre lies on the side of the image its caption names
        fx, fy = E.POSITIONS[position]
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        for frac, centre in ((fx, cx), (fy, cy)):
            assert (centre < 32) if frac == 0 else (centre > 31) if frac == 1 else abs(centre - 31.5) < 8
