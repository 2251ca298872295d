"""A1111's LoRA prompt syntax: `<lora:NAME>` or `<lora:NAME:WEIGHT>` anywhere in a prompt loads the LoRA file
NAME (its stem, found in a LoRA folder) with that weight (default 1) and is removed from the text the text
encoder sees. A1111's optional third field (`<lora:NAME:TE_WEIGHT:UNET_WEIGHT>`) is not supported: one weight
applies to the whole adapter, as `set_adapters` does.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(:[^<>]*)?>")
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt")  # pickles are refused later unless allowed


@dataclasses.dataclass(frozen=True)
class LoraTag:
    """One `<lora:name:weight>` of a prompt."""

    name: str
    weight: float = 1.0


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """(the prompt without its LoRA tags, the tags in order); ValueError naming a bad tag."""
    tags = []
    for match in LORA_TAG.finditer(prompt):
        name, weight, extra = match.group(1).strip(), match.group(2), match.group(3)
        if extra is not None:
            raise ValueError(
                f"{match.group(0)}: separate text-encoder and U-Net weights are not supported; use <lora:{name}:WEIGHT>"
            )
        try:
            value = float(weight) if weight not in (None, "") else 1.0
        except ValueError:
            raise ValueError(
                f"{match.group(0)}: the weight must be a number, like <lora:{name}:0.8>"
            ) from None
        if any(tag.name == name for tag in tags):
            raise ValueError(f"<lora:{name}> is named twice in the prompt; give it once with one weight")
        tags.append(LoraTag(name, value))
    text = re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip()
    return text, tags


def find_lora_file(name: str, lora_dir: str | os.PathLike) -> Path:
    """The file `lora_dir/**/NAME.safetensors` (or .ckpt/.pt) that lies inside `lora_dir` (links that lead out
    are ignored); ValueError for a NAME with folders, FileNotFoundError listing what the folder has."""
    if not name or any(sep in name for sep in ("/", "\\")) or name in (".", "..") or Path(name).is_absolute():
        raise ValueError(
            f"<lora:{name}>: a LoRA name is a file name in --lora-dir (without extension), no folders"
        )
    folder = Path(lora_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"LoRA folder {folder} does not exist (--lora-dir)")
    inside = folder.resolve()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in LORA_SUFFIXES and p.is_file() and p.resolve().is_relative_to(inside)
    )  # a link that leads out of the folder is not one of its LoRAs
    matches = [p for p in files if p.stem == name]
    if not matches:
        known = ", ".join(sorted({p.stem for p in files})) or "no LoRA files"
        raise FileNotFoundError(f"<lora:{name}>: no {name}.safetensors in {folder} (it has: {known})")
    return min(matches, key=lambda p: (LORA_SUFFIXES.index(p.suffix.lower()), len(p.parts)))
