"""Built-in synthetic `emoji` dataset: Noto Color Emoji glyphs captioned with their CLDR names.

Optionally the glyph is placed at a scale and position on a coloured background, and the caption says
so ("a small red apple in the top left on a blue background").
"""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from latentforge.data.builtin_rows import indefinite_article, png_image_value
from latentforge.data.shapes_grammar import COLORS

if TYPE_CHECKING:
    import datasets

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
_FONT_SIZE = 109  # the only bitmap strike in NotoColorEmoji's CBDT table; other sizes fail to load
_ADVANCE = 136  # advance width of one glyph at that size; wider text means the font fell back to pieces
SCALES = {"small": 0.35, "medium": 0.55, "large": 0.8}  # glyph side as a fraction of the image side
# position phrase -> (horizontal, vertical) place of the glyph within the free space, 0 = left/top
POSITIONS = {
    "in the top left": (0.0, 0.0),
    "at the top": (0.5, 0.0),
    "in the top right": (1.0, 0.0),
    "on the left": (0.0, 0.5),
    "in the center": (0.5, 0.5),
    "on the right": (1.0, 0.5),
    "in the bottom left": (0.0, 1.0),
    "at the bottom": (0.5, 1.0),
    "in the bottom right": (1.0, 1.0),
}
_SKIN_TONE = r"(?:light|medium-light|medium|medium-dark|dark) skin tone"


def _font(path: Path = FONT_PATH) -> ImageFont.FreeTypeFont:
    if not path.is_file():
        raise FileNotFoundError(
            f"emoji font not found at {path}; install the Debian package fonts-noto-color-emoji "
            "(sudo apt-get install fonts-noto-color-emoji)"
        )
    return _load_font(str(path))


@functools.lru_cache(maxsize=2)
def _load_font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, _FONT_SIZE)


def cldr_name(short_name: str, char: str = "") -> str:
    """CLDR-style name from the `emoji` package's ':short_name:', e.g. 'thumbs up: medium skin tone'."""
    name = short_name.strip(":").replace("_", " ")
    # the package drops CLDR's 'base: modifier, modifier' colon; put it back for flags, keycaps, skin tones
    if any(0x1F1E6 <= ord(c) <= 0x1F1FF or 0xE0020 <= ord(c) <= 0xE007F for c in char):
        return "flag: " + name  # regional-indicator pairs and tag-sequence flags (England, Scotland, Wales)
    if name.startswith("keycap "):
        return "keycap: " + name[len("keycap ") :]
    first = re.search(_SKIN_TONE, name)
    if first is None:
        return name
    rest = name[first.start() :]
    modifiers = re.findall(_SKIN_TONE, rest)
    tail = re.sub(_SKIN_TONE, "", rest).strip()  # e.g. 'red hair' in 'woman: medium skin tone, red hair'
    return f"{name[: first.start()].strip()}: {', '.join(modifiers + ([tail] if tail else []))}"


def emoji_names(skin_tones: bool = True) -> dict[str, str]:
    """Fully-qualified emoji -> CLDR name, in code point order (no rendering check)."""
    import emoji

    qualified = emoji.STATUS["fully_qualified"]
    names = {}
    for char, data in sorted(emoji.EMOJI_DATA.items()):
        if data["status"] != qualified:
            continue
        name = cldr_name(data["en"], char)
        if not skin_tones and "skin tone" in name:
            continue
        names[char] = name
    return names


@functools.lru_cache(maxsize=8192)
def render_emoji(char: str, side: int) -> Image.Image | None:
    """Glyph cropped to its content and resized to fit `side` x `side` (RGBA), or None if the font lacks it."""
    font = _font()
    x0, y0, x1, y1 = font.getbbox(char)
    if x1 - x0 > 1.2 * _ADVANCE:  # a sequence the font cannot join: drawn as several glyphs
        return None
    canvas = Image.new("RGBA", (x1, y1), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, embedded_color=True)
    content = canvas.getchannel("A").getbbox()
    if content is None:  # blank: the font has no bitmap for it
        return None
    glyph = canvas.crop(content)
    scale = side / max(glyph.size)
    size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    return glyph.resize(size, Image.Resampling.LANCZOS)


def compose(glyph: Image.Image, size: int, background: str, xy_frac: tuple[float, float]) -> Image.Image:
    """Paste an RGBA glyph on a `size` px background of a named colour; xy_frac places it in the free space."""
    image = Image.new("RGB", (size, size), COLORS[background])
    x = round(xy_frac[0] * (size - glyph.width))
    y = round(xy_frac[1] * (size - glyph.height))
    image.paste(glyph, (x, y), glyph)
    return image


def _placed_sample(rng: random.Random, char: str, name: str, size: int) -> tuple[Image.Image, str] | None:
    scale = rng.choice(list(SCALES))
    # a large glyph leaves too little room for distinct positions
    position = "in the center" if scale == "large" else rng.choice(list(POSITIONS))
    background = rng.choice(list(COLORS))
    glyph = render_emoji(char, max(4, round(SCALES[scale] * size)))
    if glyph is None:
        return None
    image = compose(glyph, size, background, POSITIONS[position])
    text = f"{indefinite_article(scale)} {scale} {name} {position} on {indefinite_article(background)} {background} background"
    return image, text


def _plain_sample(char: str, name: str, size: int) -> tuple[Image.Image, str] | None:
    glyph = render_emoji(char, max(4, round(0.9 * size)))
    return None if glyph is None else (compose(glyph, size, "white", (0.5, 0.5)), name)


def emoji_dataset(
    num_samples: int | None = None,
    seed: int = 0,
    size: int = 64,
    placement: bool = False,
    skin_tones: bool = True,
) -> datasets.Dataset:
    """`datasets.Dataset` with columns image (PIL RGB, size x size), text (CLDR name, plus placement words).

    num_samples=None: every emoji the font can draw, once, in code point order. Otherwise emoji are drawn
    at random (with replacement) from a seeded RNG; placement=True puts each at a random scale, position
    and background colour that the caption states.
    """
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be None or >= 1, got {num_samples}")
    if size < 8:
        raise ValueError(f"size must be >= 8 px, got {size}")
    _font()  # fail early with the install hint
    import datasets

    names = emoji_names(skin_tones)
    chars = list(names)
    columns: dict[str, list[Any]] = {"image": [], "text": []}
    total = len(chars) if num_samples is None else num_samples
    with tqdm(total=total, desc="emoji", disable=total < 2000) as bar:
        for i in range(len(chars) if num_samples is None else 10 * num_samples):
            if len(columns["text"]) == total:
                break
            rng = random.Random(f"emoji:{seed}:{i}")
            char = chars[i] if num_samples is None else rng.choice(chars)
            sample = (
                _placed_sample(rng, char, names[char], size)
                if placement
                else _plain_sample(char, names[char], size)
            )
            if sample is None:  # not drawable by this font version: skip
                continue
            columns["image"].append(png_image_value(sample[0]))
            columns["text"].append(sample[1])
            bar.update()
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(columns, features=features)
