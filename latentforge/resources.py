"""What ships inside the package: the configs (the repository's `configs/` folder, installed as the package
`latentforge.configs`) and the default model (`latentforge/assets/default-model`, with its inpainting variant
beside it). Every lookup of a shipped
file by name goes through here, so a wheel installed anywhere finds the same files as a checkout."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "default-model"
# Its inpainting variant (a 2C + 1-channel U-Net fine-tuned from it): the built-in model of inpainting, when shipped.
DEFAULT_INPAINT_MODEL = DEFAULT_MODEL.parent / "default-inpaint-model"
CONFIG_KINDS = ("train", "eval", "recipes")


def is_hub_id(text: str) -> bool:
    """True for what the Hugging Face hub takes as a repository id: "org/name" (not a relative or absolute path)."""
    return text.count("/") == 1 and not text.startswith((".", "/"))


def configs_root() -> Path:
    """The installed `configs/` folder (models/, train/, eval/)."""
    return Path(str(resources.files("latentforge.configs")))


def shipped_names(kind: str) -> list[str]:
    """Names of the shipped configs of `kind`: "models" (architecture folders), "train" or "eval" (YAML)."""
    folder = configs_root() / kind
    if not folder.is_dir():
        return []
    if kind == "models":
        return sorted(p.name for p in folder.iterdir() if p.is_dir())
    return sorted(p.stem for p in folder.glob("*.yaml"))


def architecture_dir(name_or_path: str | os.PathLike) -> Path:
    """The given folder, else the shipped architecture `configs/models/<name>`; FileNotFoundError listing the
    known names otherwise."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = configs_root() / "models" / str(name_or_path)
    if shipped.is_dir():
        return shipped
    raise FileNotFoundError(
        f"architecture {str(name_or_path)!r} not found: give a folder with vae/, unet/, text_encoder/, "
        f"tokenizer/ and scheduler/ configs, or one of {shipped_names('models')}"
    )


def config_file(kind: str, name_or_path: str | os.PathLike) -> Path:
    """A run config: the given YAML file, else the shipped `configs/<kind>/<name>.yaml`; FileNotFoundError
    listing the shipped names otherwise."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind must be one of {CONFIG_KINDS}, got {kind!r}")
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = configs_root() / kind / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"--config {str(name_or_path)!r}: no such file and not one of the shipped {kind} configs "
        f"{shipped_names(kind)}"
    )
