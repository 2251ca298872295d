"""The LoRAs and textual-inversion embeddings of a `generate`/`img2img`/`inpaint` run, found before any model
loads: `--lora FILE[:WEIGHT]` (repeatable), A1111's `<lora:NAME:WEIGHT>` in the prompt with NAME looked up in
`--lora-dir`, and `--embedding FILE` (repeatable; its token is the file's stem, as in A1111). A file a
--from-png record names is found as recorded when that is an absolute path (--record-paths), else by its name
beside the PNG, else (a LoRA) in --lora-dir; never elsewhere (see `confined_record_path`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from latentforge.commands.model_files import check_pickle
from latentforge.models.folder_checks import PICKLE_SUFFIXES
from latentforge.pipelines.prompt_loras import extract_lora_tags, find_lora_file


@dataclasses.dataclass(frozen=True)
class LoraUse:
    """One LoRA to load: its name (the file's stem, A1111's name and our adapter name), file and weight."""

    name: str
    path: str
    weight: float = 1.0


def add_adapter_arguments(parser: argparse.ArgumentParser) -> None:
    """--lora, --lora-dir and --embedding."""
    parser.add_argument(
        "--lora",
        action="append",
        metavar="FILE[:WEIGHT]",
        help="a LoRA file (kohya/A1111 or diffusers) with its weight (default 1); repeat for several.",
    )
    parser.add_argument(
        "--lora-dir", help="the folder where <lora:NAME:WEIGHT> in the prompt finds NAME.safetensors."
    )
    parser.add_argument(
        "--embedding",
        action="append",
        metavar="FILE",
        help="a textual-inversion embedding; its token is the file's name without extension (as in A1111), "
        "usable in the prompt and the negative prompt; repeat for several.",
    )


def parse_lora_flag(text: str) -> dict[str, Any]:
    """`FILE` or `FILE:WEIGHT` as {"file", "weight"}; a path that exists as given keeps its colons."""
    file, sep, weight = text.rpartition(":")
    if not sep or Path(text).exists() or not file:
        return {"file": text, "weight": 1.0}
    try:
        return {"file": file, "weight": float(weight)}
    except ValueError:
        raise ValueError(f"--lora {text}: the weight {weight!r} is not a number; write FILE:0.8") from None


def confined_record_path(recorded: str, flag: str) -> bool:
    """Whether a path a PNG's record names may be used as recorded: only an absolute path (what --record-paths
    writes) without `..` that exists; never a pickle (one is opened only when the user names it). A record is
    a file from anywhere: a relative path, `..` or a link must not lead it to the user's other files."""
    path = Path(recorded)
    if not path.is_absolute() or ".." in path.parts or not path.exists():
        return False
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{flag}: the PNG's record names the pickle {path}; a pickle is opened only when you name it: pass "
            f"{flag} {path} --allow-pickle if you trust it"
        )
    return True


def locate_file(recorded: str, flag: str, png: str | None, folder: str | None = None) -> str:
    """The file as given (else in `folder`, --lora-dir); a file a PNG's record names (`png` given) only as
    `confined_record_path` allows, else by its name beside the PNG or in `folder`, inside them (a link that
    leads out does not count); FileNotFoundError naming `flag` otherwise."""
    path: Path | None = Path(recorded)
    places = [Path(png).parent] if png else []
    places += [Path(folder)] if folder else []
    if png and not confined_record_path(recorded, flag):
        path = next((place / path.name for place in places if _inside(place / path.name, place)), None)
    elif not path.exists() and folder:
        path = Path(folder) / path.name
    if path is None or not path.is_file():
        also = ", or the folder that holds it with --lora-dir" if flag == "--lora" else ""
        where = f" (nor beside {png}; pass {flag} FILE{also})" if png else ""
        raise FileNotFoundError(f"{flag}: file {recorded} does not exist{where}")
    return str(path.resolve())


def _inside(path: Path, folder: Path) -> bool:
    return path.is_file() and path.resolve().is_relative_to(folder.resolve())


def lora_uses(
    loras: list[dict[str, Any]], prompt: str, lora_dir: str | None, allow_pickle: bool
) -> list[LoraUse]:
    """The `--lora` files (already located), then the prompt's `<lora:NAME:WEIGHT>` tags found in `lora_dir`;
    each checked (pickles need --allow-pickle), no name twice."""
    uses = [LoraUse(Path(entry["file"]).stem, entry["file"], entry["weight"]) for entry in loras]
    tags = extract_lora_tags(prompt)[1]
    if tags and not lora_dir:
        raise ValueError(
            f"<lora:{tags[0].name}> in the prompt: pass --lora-dir with the folder of your LoRA files"
        )
    uses += [LoraUse(tag.name, str(find_lora_file(tag.name, lora_dir)), tag.weight) for tag in tags]
    names = [use.name for use in uses]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(
            f"--lora/<lora:...>: the LoRA {twice[0]} is given twice; give it once with one weight"
        )
    for use in uses:
        check_pickle(use.path, "--lora", allow_pickle)
    return uses


def check_embeddings(files: list[str], allow_pickle: bool) -> None:
    """Every --embedding file (already located) readable (pickles need --allow-pickle), no token twice."""
    for file in files:
        check_pickle(file, "--embedding", allow_pickle)
    tokens = [Path(file).stem for file in files]
    twice = sorted({token for token in tokens if tokens.count(token) > 1})
    if twice:
        raise ValueError(f"--embedding: two files give the token {twice[0]}; rename one of them")
