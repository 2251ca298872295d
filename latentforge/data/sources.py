"""Load any image/caption source as a `datasets.Dataset`: built-in synthetic sets, local folders, hub ids."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentforge.data.emoji import emoji_dataset
from latentforge.data.shapes import shapes_dataset

if TYPE_CHECKING:
    import datasets

BUILTIN_SOURCES = ("shapes", "emoji")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_BUILTIN_PARAMS = {
    "shapes": {
        "num_samples": int,
        "seed": int,
        "size": int,
        "kind": str,
        "min_side": int,
        "max_side": int,
    },
    "emoji": {"num_samples": int, "seed": int, "size": int, "placement": bool, "skin_tones": bool},
}


def _parse_builtin(source: str, params: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """'shapes:num_samples=1000,size=64' -> ('shapes', {...}); explicit `params` win over the string."""
    name, _, arg_text = source.partition(":")
    allowed = _BUILTIN_PARAMS[name]
    parsed: dict[str, Any] = {}
    for item in filter(None, arg_text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in allowed:
            raise ValueError(
                f"source {source!r}: bad parameter {item!r}; allowed keys for {name}: {sorted(allowed)}"
            )
        kind = allowed[key.strip()]
        parsed[key.strip()] = value.strip().lower() in ("1", "true", "yes") if kind is bool else kind(value)
    for key in params or {}:
        if key not in allowed:
            raise ValueError(f"params: unknown key {key!r} for {name}; allowed: {sorted(allowed)}")
    return name, {**parsed, **(params or {})}


def _load_builtin(name: str, kwargs: dict[str, Any]) -> datasets.Dataset:
    if name == "shapes":
        return shapes_dataset(**{"num_samples": 10_000, **kwargs})
    return emoji_dataset(**kwargs)


def _caption_folder(folder: Path) -> datasets.Dataset:
    """Images with same-name .txt captions (kohya layout), searched recursively, sorted by path."""
    import datasets

    images = image_files(folder)
    missing = [str(p) for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        raise ValueError(
            f"source {folder}: {len(missing)} image(s) have no same-name .txt caption, e.g. {missing[:3]}"
        )
    texts = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in images]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.Dataset.from_dict({"image": [str(p) for p in images], "text": texts}, features=features)


def image_files(folder: str | Path) -> list[Path]:
    """The images in `folder` and below, sorted by path (FileNotFoundError when it is not a folder; ValueError
    for a link that leads out of it)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    check_inside(folder, [(str(p.relative_to(folder)), p) for p in images])
    return images


def check_inside(folder: Path, entries: list[tuple[str, Path]]) -> None:
    """ValueError naming the first (name, path) of a dataset that is absolute, climbs out with `..` or is a link
    whose target lies outside `folder`: a dataset reads its own folder and nothing else."""
    root = folder.resolve()
    for name, path in entries:
        if Path(name).is_absolute() or ".." in Path(name).parts or not path.resolve().is_relative_to(root):
            raise ValueError(
                f"source {folder}: {name!r} leads outside the dataset folder (an absolute path, '..' or a link "
                "out); copy the file into the folder and name it relative to it"
            )


def check_metadata_paths(folder: Path) -> None:
    """Every file_name of the imagefolder metadata.jsonl files under `folder` stays inside the folder of its
    metadata file (checked before `datasets` reads them, so the error names the entry)."""
    for metadata in sorted(folder.rglob("metadata.jsonl")):
        names = []
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"source {folder}: {metadata} line {number} is not JSON ({err.msg})"
                ) from None
            name = row.get("file_name") if isinstance(row, dict) else None
            if isinstance(name, str):
                names.append((name, metadata.parent / name))
        check_inside(metadata.parent, names)


def prompt_folder_dataset(folder: str | Path, prompt: str, limit: int | None = None) -> datasets.Dataset:
    """Image/caption dataset of the images in `folder` (the first `limit`), every one captioned `prompt`:
    a DreamBooth instance or class folder."""
    import datasets

    images = image_files(folder)[:limit]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    rows = {"image": [str(p) for p in images], "text": [prompt] * len(images)}
    return datasets.Dataset.from_dict(rows, features=features)


def _pick_split(data: Any, split: str, source: str) -> datasets.Dataset:
    import datasets

    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise ValueError(f"source {source}: no split {split!r}; available splits: {sorted(data)}")
        return data[split]
    return data


def _load_folder(folder: Path, split: str) -> datasets.Dataset:
    import datasets

    if (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file():
        return _pick_split(datasets.load_from_disk(str(folder)), split, str(folder))
    if any(folder.rglob("metadata.jsonl")) or any(folder.rglob("metadata.csv")):
        check_metadata_paths(folder)
        try:
            data = datasets.load_dataset("imagefolder", data_dir=str(folder))
        except datasets.exceptions.DatasetGenerationError as err:  # its cause says which row is wrong
            raise ValueError(
                f"source {folder}: the imagefolder metadata is not valid ({err.__cause__ or err})"
            ) from None
        return _pick_split(data, split, str(folder))
    if any(folder.rglob("*.txt")):
        return _caption_folder(folder)
    raise ValueError(
        f"source {folder}: folder is not a save_to_disk dataset, has no metadata.jsonl (imagefolder) "
        "and no same-name .txt captions"
    )


def check_columns(dataset: datasets.Dataset, image_column: str, caption_column: str, source: str) -> None:
    """ValueError naming the missing column, the columns there are, and the keys that choose them."""
    for key, column in (("image_column", image_column), ("caption_column", caption_column)):
        if column not in dataset.column_names:
            raise ValueError(
                f"source {source}: no column {column!r} for {key}; available columns: {dataset.column_names}. "
                f"Set {key}=<name> (in a training config: the data section's {key})"
            )


def load_image_text_dataset(
    source: str,
    image_column: str = "image",
    caption_column: str = "text",
    split: str = "train",
    params: Mapping[str, Any] | None = None,
) -> datasets.Dataset:
    """Image/caption `datasets.Dataset` from `source`.

    source: 'shapes' / 'emoji' (built-in; parameters as params={...} or 'shapes:num_samples=1000,size=64'),
    an imagefolder with metadata.jsonl, a folder of images with same-name .txt captions, a `save_to_disk`
    folder, or a hub dataset id (needs a network). Images stay lazily decoded.
    """
    name = source.partition(":")[0]
    if name in BUILTIN_SOURCES:
        dataset = _load_builtin(*_parse_builtin(source, params))
    elif params:
        raise ValueError(f"params are only for built-in sources {BUILTIN_SOURCES}, not {source!r}")
    elif Path(source).expanduser().is_dir():
        dataset = _load_folder(Path(source).expanduser(), split)
    elif Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(
            f"source {source!r} is not a folder, a built-in name {BUILTIN_SOURCES} or a hub id 'owner/name'"
        )
    else:
        import datasets

        dataset = datasets.load_dataset(source, split=split)
    check_columns(dataset, image_column, caption_column, source)
    return dataset
