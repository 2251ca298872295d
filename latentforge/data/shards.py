"""WebDataset-style tar shards, as LAION-scale sets ship them: `00000.tar`, `00001.tar`, ... each holding samples
as members that share a key, `<key>.jpg` (or .png/.webp) beside `<key>.txt` or `<key>.json` (its caption).

`find_shards` turns `data.shards` (brace ranges, globs, folders, files) into the list of shard files;
`write_shards` writes shards from any image/caption dataset (`python -m latentforge.data.shards SOURCE OUT`).
Reading them for training is `latentforge.data.streaming`. Neither `datasets` nor `webdataset` writes this
format, so the writer is a few lines of `tarfile`.
"""

from __future__ import annotations

import argparse
import glob
import io
import itertools
import os
import re
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from latentforge.atomic_files import staged_file

SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHOICE = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """'a/{000..002}.tar' -> a/000.tar, a/001.tar, a/002.tar (zero-padded like the first bound); '{x,y}' -> x, y."""
    for regex in (_RANGE, _CHOICE):
        if match := regex.search(pattern):
            head, tail = pattern[: match.start()], pattern[match.end() :]
            if regex is _RANGE:
                low, high = match.group(1), match.group(2)
                parts = [str(n).zfill(len(low)) for n in range(int(low), int(high) + 1)]
            else:
                parts = match.group(1).split(",")
            return [out for part in parts for out in expand_braces(head + part + tail)]
    return [pattern]


def _matches(path: str) -> list[str]:
    if glob.has_magic(path):
        found = sorted(glob.glob(path))
        if not found:
            raise FileNotFoundError(f"data.shards: no file matches {path}")
        return found
    if Path(path).is_dir():
        found = sorted(str(p) for p in Path(path).glob("*.tar"))
        if not found:
            raise FileNotFoundError(f"data.shards: the folder {path} holds no .tar shard")
        return found
    if not Path(path).is_file():
        raise FileNotFoundError(f"data.shards: shard {path} does not exist")
    return [path]


def find_shards(patterns: str | Sequence[str]) -> list[Path]:
    """The shard files of `patterns` (each a file, a folder of .tar files, a glob or a brace pattern such as
    'shards/{00000..00099}.tar'), in the order given, each once. FileNotFoundError names a missing shard."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    found: dict[str, None] = {}
    for pattern in (p.strip() for p in patterns if p.strip()):
        for path in expand_braces(os.path.expanduser(pattern)):
            found.update(dict.fromkeys(_matches(path)))
    if not found:
        raise ValueError("data.shards is empty: give shard files, a folder of .tar files or a pattern")
    return [Path(p) for p in found]


def not_a_tar(path: Path, err: Exception) -> ValueError:
    """The error for a shard that tarfile cannot read."""
    return ValueError(f"data.shards: {path} is not a readable uncompressed tar file ({err})")


def check_readable(paths: Sequence[Path]) -> None:
    """ValueError naming the first of `paths` that is not an uncompressed tar; reads each one's first header
    only, so that a junk shard is named before any model loads, not when its stream is indexed."""
    for path in paths:
        try:
            with tarfile.open(path, "r:"):  # opening reads the first header
                pass
        except (tarfile.TarError, OSError) as err:
            raise not_a_tar(path, err) from None


def _image_bytes(value: Any) -> tuple[bytes, str]:
    """(file bytes, extension) of a `datasets` image value; files keep their bytes, PIL images become PNG."""
    if isinstance(value, dict):
        data = value.get("bytes") or Path(value["path"]).read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "png").lower()
        return data, {"jpeg": "jpg"}.get(kind, kind)
    buffer = io.BytesIO()
    value.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue(), "png"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    rows: Iterable[dict[str, Any]],
    folder: str | Path,
    samples_per_shard: int = 1000,
    image_column: str = "image",
    caption_column: str = "text",
) -> list[Path]:
    """Write `rows` (e.g. a `datasets.Dataset`, images undecoded or PIL) as folder/00000.tar, ... with members
    <key>.<ext> and <key>.txt, key = the row's number (9 digits); each shard appears whole (`staged_file`). A
    list of captions keeps its first. Returns the shard paths."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    numbered = enumerate(rows)
    while chunk := list(itertools.islice(numbered, samples_per_shard)):
        path = folder / f"{len(paths):05d}.tar"
        with staged_file(path) as tmp, tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i, row in chunk:
                data, ext = _image_bytes(row[image_column])
                caption = row[caption_column]
                caption = (caption[0] if caption else "") if isinstance(caption, list | tuple) else caption
                _add(tar, f"{i:09d}.{ext}", data)
                _add(tar, f"{i:09d}.txt", str(caption or "").encode())
        paths.append(path)
    if not paths:
        raise ValueError("write_shards: no rows to write")
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    """python -m latentforge.data.shards SOURCE OUT [--samples-per-shard N]"""
    parser = argparse.ArgumentParser(
        prog="python -m latentforge.data.shards",
        description="Write an image/caption source (a folder, 'shapes:num_samples=1000,size=64', ...) as tar "
        "shards for data.shards.",
    )
    parser.add_argument("source", help="as data.dataset: image folder, save_to_disk folder, shapes, emoji")
    parser.add_argument("out", help="folder for 00000.tar, 00001.tar, ...")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--caption-column", default="text")
    args = parser.parse_args(argv)
    import datasets

    from latentforge.data.sources import load_image_text_dataset

    data = load_image_text_dataset(args.source, args.image_column, args.caption_column)
    if isinstance(data.features[args.image_column], datasets.Image):
        data = data.cast_column(args.image_column, datasets.Image(decode=False))
    paths = write_shards(data, args.out, args.samples_per_shard, args.image_column, args.caption_column)
    print(f"wrote {len(data)} samples in {len(paths)} shard(s) to {args.out}")


if __name__ == "__main__":
    main()
