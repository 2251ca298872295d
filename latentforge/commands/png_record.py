"""Generation parameters stored in PNG text chunks, and read back to regenerate an image.

Two chunks: `parameters`, AUTOMATIC1111's "infotext" (prompt, `Negative prompt: ...`, then one line of
`Key: value` pairs), which A1111, ComfyUI and image viewers show; and `latentforge`, a JSON record with
every setting needed to make the same image again (`latentforge generate --from-png FILE`). Images from
A1111 (with only `parameters`) can be read too, as far as their settings map onto ours.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import PIL.Image
from PIL.PngImagePlugin import PngInfo

from latentforge import __version__
from latentforge.atomic_files import staged_file
from latentforge.pipelines.sampling_defaults import FALLBACK
from latentforge.pipelines.schedulers import SCHEDULERS
from latentforge.resources import DEFAULT_INPAINT_MODEL, DEFAULT_MODEL

DEFAULT_MODEL_NAME = "default"  # --model default, and the built-in model's name in a record

PARAMETERS_KEY = "parameters"
RECORD_KEY = "latentforge"
RECORD_VERSION = 1
_A1111_TO_NAME = {spec.a1111_name: name for name, spec in SCHEDULERS.items()}
_PARAM_RE = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclasses.dataclass
class GenerationRecord:
    """Everything that decides an image: with the same model, device and dtype it is made again exactly."""

    task: str = "txt2img"  # "txt2img", "img2img" or "inpaint"
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0  # of the first image; image i of a batch has seed + i
    num_images: int = 1
    steps: int = FALLBACK.steps  # these three: the model's generation_defaults.json when it has one
    scheduler: str | None = None  # None: the model's own scheduler
    guidance_scale: float = FALLBACK.guidance_scale
    guidance_rescale: float = FALLBACK.guidance_rescale
    clip_skip: int | None = None
    cache_interval: int = 1  # step caching (DeepCache): the whole U-Net every N steps; 1 = the exact path
    cache_warmup: int = 0  # with step caching: the first N steps all run the whole U-Net
    width: int | None = None
    height: int | None = None
    strength: float | None = None
    mask_blur: float = 0.0
    paste_back: bool = True
    image: str | None = None  # the input image (img2img, inpaint): its file name, or its path when asked
    mask: str | None = None
    model: str = ""  # "default" (the built-in model), a hub id, a folder's name, or its path when asked
    model_hash: str = ""  # Components.weights_hash()
    model_scheduler: str | None = None  # the sampler the model's own scheduler is (when `scheduler` is None)
    # --lora FILE:WEIGHT as {"file", "weight"} (the file by name, its path when asked); <lora:NAME:WEIGHT> tags
    # stay in the prompt, as A1111 keeps them
    loras: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lora_hashes: dict[str, str] = dataclasses.field(default_factory=dict)  # every LoRA's name -> A1111's hash
    embeddings: list[str] = dataclasses.field(
        default_factory=list
    )  # --embedding files (by name unless asked)
    embedding_hashes: dict[str, str] = dataclasses.field(default_factory=dict)  # token -> A1111's TI hash
    device: str | None = None
    dtype: str | None = None
    grid: bool = False  # the image is a grid of `num_images` images
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for name, default in (("cache_interval", 1), ("cache_warmup", 0)):
            if data[name] == default:  # the exact path: records (and PNG bytes) as before step caching
                del data[name]
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRecord:
        """The record of `data` (unknown keys ignored); ValueError naming a field of the wrong type (a PNG's
        record is a file from anywhere: nothing in it is trusted to be well formed)."""
        if not isinstance(data, dict):
            raise ValueError(f"the record is a JSON {type(data).__name__}, not an object of settings")
        hints = typing.get_type_hints(cls)
        for key, value in data.items():
            if key in hints and not _fits(value, hints[key]):
                raise ValueError(f"the record's {key!r} is {value!r}, which is not a {hints[key]}")
        return cls(**{k: v for k, v in data.items() if k in hints})


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` (from JSON) has the type `hint` of a GenerationRecord field (the outer type only)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    kind = typing.get_origin(hint) or hint
    if kind is type(None):
        return value is None
    if kind in (int, float):  # JSON has no int/bool distinction that Python keeps: refuse true as a number
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    return isinstance(value, kind)


def sampler_name(class_name: str, config: dict[str, Any]) -> str | None:
    """Our name of the sampler a scheduler is (its class and the settings that make the variant), or None."""
    for name, spec in SCHEDULERS.items():
        if spec.class_name == class_name and all(config.get(k, v) == v for k, v in spec.overrides.items()):
            return name
    return None


def a1111_parameters(record: GenerationRecord) -> str:
    """A1111's infotext for `record`: every field A1111 writes for the task (Sampler and Clip skip in A1111's
    conventions; Sampler is the model's own when no other was asked for)."""
    sampler = record.scheduler or record.model_scheduler
    fields = {
        "Steps": record.steps,
        "Sampler": SCHEDULERS[sampler].a1111_name if sampler in SCHEDULERS else sampler,
        "CFG scale": record.guidance_scale,
        "Seed": record.seed,
        "Size": f"{record.width}x{record.height}" if record.width and record.height else None,
        "Model hash": record.model_hash or None,
        "Model": Path(record.model).name if record.model else None,
        "Denoising strength": record.strength if record.task != "txt2img" else None,
        "Clip skip": record.clip_skip + 1 if record.clip_skip else None,  # A1111 counts "no skip" as 1
        "CFG rescale": record.guidance_rescale or None,
        "Mask blur": record.mask_blur if record.task == "inpaint" else None,
        "Cache interval": record.cache_interval if record.cache_interval > 1 else None,
        "Cache warmup": record.cache_warmup if record.cache_interval > 1 and record.cache_warmup else None,
        "Lora hashes": _hash_list(record.lora_hashes),
        "TI hashes": _hash_list(record.embedding_hashes),
        "Version": f"latentforge {__version__}",
    }
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value is not None)
    negative = f"\nNegative prompt: {record.negative_prompt}" if record.negative_prompt else ""
    # A1111 knows LoRAs only as prompt tags: the --lora files join the prompt as <lora:NAME:WEIGHT>
    tags = "".join(f" <lora:{Path(e['file']).stem}:{e['weight']:g}>" for e in record.loras)
    return f"{record.prompt}{tags}{negative}\n{line}"


def _hash_list(hashes: dict[str, str]) -> str | None:
    """A1111's `name: hash, name: hash` (None when empty: the field is left out)."""
    return ", ".join(f"{name}: {value}" for name, value in hashes.items()) or None


def _parse_hash_list(text: str) -> dict[str, str]:
    pairs = (item.rpartition(":") for item in text.split(","))
    return {name.strip(): value.strip() for name, sep, value in pairs if sep and name.strip()}


def shareable(record: GenerationRecord, keep_paths: bool = False) -> GenerationRecord:
    """`record` as a PNG carries it: the model as `default`, a hub id or its folder's name, and the input
    files by name, so that a shared image does not show the user's folders (paths kept with `keep_paths`)."""
    if keep_paths:
        return record
    model = record.model
    if model in (str(DEFAULT_MODEL), str(DEFAULT_INPAINT_MODEL)):  # `default` reads back as the same one
        model = DEFAULT_MODEL_NAME
    elif Path(model).exists():
        model = Path(model).name
    image, mask = (Path(p).name if p else p for p in (record.image, record.mask))
    loras = [{**entry, "file": Path(entry["file"]).name} for entry in record.loras]
    embeddings = [Path(file).name for file in record.embeddings]
    return dataclasses.replace(
        record, model=model, image=image, mask=mask, loras=loras, embeddings=embeddings
    )


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ',:"\n') else text


def png_info(record: GenerationRecord) -> PngInfo:
    """PNG text chunks holding `record` (A1111 `parameters` and the JSON `latentforge` record)."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, a1111_parameters(record))
    info.add_text(RECORD_KEY, record.to_json())
    return info


def save_png(image: PIL.Image.Image, path: str | os.PathLike, record: GenerationRecord) -> None:
    """Save `image` as PNG at `path` with `record` in its text chunks, atomically (`staged_file`): a kill, a
    full disk or a failed encode never leaves a PNG that looks complete, nor destroys the file that was there."""
    with staged_file(Path(path)) as tmp:
        image.save(tmp, format="PNG", pnginfo=png_info(record))


def read_record(path: str | os.PathLike) -> GenerationRecord:
    """The generation record of a PNG (ours, or parsed from A1111's `parameters`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--from-png: file {path} does not exist")
    try:
        with PIL.Image.open(path) as image:
            texts = dict(getattr(image, "text", {}) or {})
    except (PIL.UnidentifiedImageError, OSError) as err:
        raise ValueError(f"--from-png: {path} is not an image file PIL can read ({err})") from err
    if RECORD_KEY in texts:
        try:
            return GenerationRecord.from_dict(json.loads(texts[RECORD_KEY]))
        except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(
                f"--from-png: the {RECORD_KEY!r} record of {path} is not a valid generation record ({err}); "
                "give the settings on the command line instead"
            ) from err
    if PARAMETERS_KEY in texts:
        try:
            return parse_a1111_parameters(texts[PARAMETERS_KEY])
        except ValueError as err:
            raise ValueError(
                f"--from-png: the {PARAMETERS_KEY!r} text of {path} has a bad value ({err}); "
                "give that setting on the command line instead"
            ) from err
    raise ValueError(
        f"--from-png: {path} carries no generation parameters (no {PARAMETERS_KEY!r} text chunk)"
    )


def parse_a1111_parameters(text: str) -> GenerationRecord:
    """A record from A1111's infotext: prompt, negative prompt and the settings we share."""
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    if lines and len(_PARAM_RE.findall(lines[-1])) >= 3:
        params = {k.strip(): _unquote(v.strip()) for k, v in _PARAM_RE.findall(lines.pop())}
    prompt_lines: list[str] = []
    negative_lines: list[str] | None = None
    for line in lines:
        if line.startswith("Negative prompt:"):
            negative_lines = [line[len("Negative prompt:") :].strip()]
        elif negative_lines is not None:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    record = GenerationRecord(prompt="\n".join(prompt_lines), negative_prompt="\n".join(negative_lines or []))
    _apply_a1111_params(record, params)
    return record


def _number(params: dict[str, str], key: str, kind: type) -> Any:
    """params[key] as `kind`; ValueError naming the field."""
    try:
        return kind(params[key])
    except ValueError:
        raise ValueError(f"{key}: {params[key]!r} is not a {kind.__name__}") from None


def _apply_a1111_params(record: GenerationRecord, params: dict[str, str]) -> None:
    if "Steps" in params:
        record.steps = _number(params, "Steps", int)
    if "Seed" in params:
        record.seed = _number(params, "Seed", int)
    if "CFG scale" in params:
        record.guidance_scale = _number(params, "CFG scale", float)
    if "Sampler" in params:
        record.scheduler = _A1111_TO_NAME.get(params["Sampler"])
    if "Size" in params and "x" in params["Size"]:
        width, _, height = params["Size"].partition("x")
        record.width, record.height = (
            _number({"Size": width}, "Size", int),
            _number({"Size": height}, "Size", int),
        )
    if "Clip skip" in params:
        record.clip_skip = max(_number(params, "Clip skip", int) - 1, 0) or None
    if "Cache interval" in params:
        record.cache_interval = _number(params, "Cache interval", int)
    if "Cache warmup" in params:
        record.cache_warmup = _number(params, "Cache warmup", int)
    if "Denoising strength" in params:
        record.strength = _number(params, "Denoising strength", float)
        record.task = "img2img"
    record.lora_hashes = _parse_hash_list(params.get("Lora hashes", ""))
    record.embedding_hashes = _parse_hash_list(params.get("TI hashes", ""))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return value
