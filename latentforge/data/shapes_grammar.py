"""Caption grammar of the `shapes` dataset: scene -> caption (`caption_scene`) and prompt -> spec (`parse_prompt`).

Grammar (lower case, optional trailing period):
    prompt   := body [" on a" ["n"] " " BACKGROUND " background"]
    body     := group | group " and " group | single " " RELATION " " single
    group    := single | NUMBER " " COLOR " " SHAPE "s"          NUMBER in two, three, four
    single   := ("a" | "an" | "one") " " COLOR " " SHAPE
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from latentforge.data.builtin_rows import indefinite_article

if TYPE_CHECKING:  # shapes.py imports this module; the scene type is only named here
    from latentforge.data.shapes import Scene

# Saturated, well separated in RGB and hue, so generated images can be classified by colour
# segmentation (nearest named colour). Brown is left out on purpose: it sits between red and orange.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 230),
    "yellow": (250, 220, 20),
    "purple": (130, 40, 180),
    "orange": (250, 130, 10),
    "pink": (250, 120, 200),
    "cyan": (20, 210, 230),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
PLAIN_BACKGROUNDS = ("white", "black", "gray")
BACKGROUNDS = ("white", "black", "gray", "red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan")
SHAPES = ("circle", "square", "triangle", "star")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
RELATIONS = ("to the left of", "to the right of", "above", "below")
_COUNT_OF_WORD = {"a": 1, "an": 1, "one": 1} | {w: n for n, w in NUMBER_WORDS.items()}
# relation -> the relation seen from the other object
_INVERSE = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
Box = tuple[int, int, int, int]


class ObjectSpec(NamedTuple):
    """`count` objects of one colour and shape."""

    count: int
    color: str
    shape: str


@dataclass
class PromptSpec:
    """Structured prompt: object groups; `relation` holds between objects[0] and objects[1]; background or None."""

    objects: list[ObjectSpec] = field(default_factory=list)
    relation: str | None = None
    background: str | None = None


def relation_holds(a: Box, b: Box, relation: str) -> bool:
    """True when box `a` is strictly `relation` box `b` (no overlap along that axis); boxes are x0,y0,x1,y1."""
    if relation == "to the left of":
        return a[2] <= b[0]
    if relation == "to the right of":
        return b[2] <= a[0]
    if relation == "above":
        return a[3] <= b[1]
    if relation == "below":
        return b[3] <= a[1]
    raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")


def _group_text(count: int, color: str, shape: str) -> str:
    if count == 1:
        return f"{indefinite_article(color)} {color} {shape}"
    return f"{NUMBER_WORDS[count]} {color} {shape}s"


def _groups(scene: Scene) -> list[ObjectSpec]:
    counts: dict[tuple[str, str], int] = {}
    for obj in scene.objects:
        counts[(obj.color, obj.shape)] = counts.get((obj.color, obj.shape), 0) + 1
    return [ObjectSpec(n, c, s) for (c, s), n in counts.items()]


def caption_scene(scene: Scene, rng: random.Random) -> str:
    """Caption a scene of 1 or 2 colour/shape groups (<= 4 each); phrasing chosen by `rng`."""
    groups = _groups(scene)
    if not 1 <= len(groups) <= 2 or any(g.count > 4 for g in groups):
        raise ValueError(f"scene must hold 1 or 2 colour/shape groups of at most 4 objects, got {groups}")
    if len(groups) == 1:
        body = _group_text(*groups[0])
    elif groups[0].count == groups[1].count == 1 and rng.random() < 0.6:
        a, b = rng.sample(list(scene.objects), 2)
        relation = rng.choice([r for r in RELATIONS if relation_holds(a.box, b.box, r)])
        body = f"{_group_text(1, a.color, a.shape)} {relation} {_group_text(1, b.color, b.shape)}"
    else:
        first, second = rng.sample(groups, 2)
        body = f"{_group_text(*first)} and {_group_text(*second)}"
    # a non-white background is always named; white (the default look) only half of the time
    if scene.background != "white" or rng.random() < 0.5:
        body += f" on {indefinite_article(scene.background)} {scene.background} background"
    return body


def _parse_group(text: str, prompt: str) -> ObjectSpec:
    words = text.split(" ")
    if len(words) != 3 or words[0] not in _COUNT_OF_WORD:
        raise ValueError(
            f"prompt {prompt!r}: cannot read {text!r}; expected '<a|an|one|two|three|four> COLOR SHAPE'"
        )
    count, color, shape = _COUNT_OF_WORD[words[0]], words[1], words[2]
    if count > 1:
        if not shape.endswith("s"):
            raise ValueError(f"prompt {prompt!r}: {text!r} needs a plural shape")
        shape = shape[:-1]
    if color not in COLORS:
        raise ValueError(f"prompt {prompt!r}: unknown colour {color!r}; allowed: {sorted(COLORS)}")
    if shape not in SHAPES:
        raise ValueError(f"prompt {prompt!r}: unknown shape in {text!r}; allowed: {list(SHAPES)}")
    return ObjectSpec(count, color, shape)


def parse_prompt(prompt: str) -> PromptSpec:
    """Read a prompt of the shapes grammar (see module docstring); ValueError for anything outside it."""
    text = " ".join(prompt.lower().strip().rstrip(".").split())
    spec = PromptSpec()
    match = re.fullmatch(r"(.+) on an? (\w+) background", text)
    if match:
        text, spec.background = match.group(1), match.group(2)
        if spec.background not in BACKGROUNDS:
            raise ValueError(
                f"prompt {prompt!r}: unknown background {spec.background!r}; allowed: {list(BACKGROUNDS)}"
            )
    relation = re.search(r" (" + "|".join(RELATIONS) + r") ", text)
    if relation:
        spec.relation = relation.group(1)
        parts = [text[: relation.start()], text[relation.end() :]]
    else:
        parts = text.split(" and ")
    if len(parts) > 2:
        raise ValueError(f"prompt {prompt!r}: at most two object groups are allowed")
    spec.objects = [_parse_group(p, prompt) for p in parts]
    if spec.relation and any(o.count != 1 for o in spec.objects):
        raise ValueError(f"prompt {prompt!r}: a relation must join two single objects ('a COLOR SHAPE')")
    if len(spec.objects) == 2 and spec.objects[0][1:] == spec.objects[1][1:]:
        raise ValueError(f"prompt {prompt!r}: the two groups must differ in colour or shape")
    return spec


def inverse_relation(relation: str) -> str:
    """'to the left of' <-> 'to the right of', 'above' <-> 'below'."""
    return _INVERSE[relation]
