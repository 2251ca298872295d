"""Run configs: typed dataclasses with working defaults, YAML files of overrides, `key=value` overrides.

A config class is a plain `@dataclass` whose fields all have defaults (nested dataclasses allowed).
`load_config(UNetTrainConfig, "configs/train/smoke-unet.yaml", ["optim.learning_rate=1e-4", "ema.decay=0.999"])`
starts from
the defaults, applies the YAML file, then the command-line overrides, coercing each value to the
field's declared type. Unknown keys are an error that lists the valid ones and suggests the closest key
at any depth (`resume` -> `checkpoint.resume`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults of `cls`, then the YAML file at `path` (if any), then `key=value` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config file {path} is not UTF-8 text ({err.reason}); give a YAML file"
            ) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(
                f"config file {path} must hold a mapping of key: value, got {type(loaded).__name__}"
            )
        values = _deep_merge(values, dict(loaded))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. optim.learning_rate=1e-4)"
            )
        values = _deep_merge(values, _nest(key.strip(), _override_value(item, raw)))
    return build_config(cls, values)


def _override_value(item: str, raw: str) -> Any:
    """The value of a KEY=VALUE override, read as YAML (numbers, true/false, [lists]); ConfigError naming it."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)}); quote text, close [lists]"
        ) from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error on one line: what is wrong and where (its own text spans several lines)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def build_config(cls: type[T], values: Mapping[str, Any], _prefix: str = "", _root: type | None = None) -> T:
    """Instantiate dataclass `cls` from a (nested) mapping, checking keys and coercing types."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            valid = sorted(_prefix + k for k in fields)
            raise ConfigError(_unknown_key_message(_prefix + key, valid, all_keys(_root or cls)))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{_prefix}{key} is a group of settings; give a mapping or {key}.FIELD=VALUE"
                )
            # Start from the group's own default (a parent may set e.g. optim=OptimConfig(lr=5e-4)), so a
            # YAML that overrides one key of a group keeps the parent's other defaults.
            kwargs[key] = build_config(
                hint, _deep_merge(_default_values(fields[key]), value), f"{_prefix}{key}.", _root or cls
            )
        else:
            kwargs[key] = coerce(value, hint, _prefix + key)
    return cls(**kwargs)


def _default_values(field: dataclasses.Field) -> dict[str, Any]:
    """The default of a dataclass-typed field as a nested dict ({} when it has none)."""
    if field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = field.default
    return dataclasses.asdict(default) if dataclasses.is_dataclass(default) else {}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain nested dict (YAML/JSON safe) of a config dataclass."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as YAML (all fields, so the file alone reproduces the run)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert `value` (from YAML or the command line) to type `hint`, or raise ConfigError naming `name`."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), name)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{name} must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence):
        return _coerce_sequence(value, origin, typing.get_args(hint), name)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        return _coerce_bool(value, name)
    if hint in (int, float):
        return _coerce_number(value, hint, name)
    if hint is str:
        if isinstance(value, (Mapping, list)):
            raise ConfigError(f"{name} must be text, got {value!r}")
        return str(value)
    return value


def _coerce_union(value: Any, args: tuple, name: str) -> Any:
    is_none = value is None or (isinstance(value, str) and value.lower() in {"none", "null"})
    if is_none and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return coerce(value, arg, name)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(f"{name}: {value!r} fits none of the allowed types: " + "; ".join(errors))


# a comma that separates list items: not one inside braces, so the shard pattern "a/{x,y}.tar" stays one item
_LIST_COMMA = re.compile(r",(?![^{}]*\})")


def _coerce_sequence(value: Any, origin: Any, args: tuple, name: str) -> list | tuple:
    if isinstance(value, str):
        value = [v.strip() for v in _LIST_COMMA.split(value)] if value else []
    if not isinstance(value, (list, tuple)):
        value = [value]
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{name} needs {len(args)} values, got {len(value)}: {value!r}")
        return tuple(coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    item = args[0] if args else Any
    out = [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if origin is tuple else out


def _coerce_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in _TRUE:
        return True
    if str(value).lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _coerce_number(value: Any, hint: type, name: str) -> int | float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if hint is int:
        if not number.is_integer():
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return number


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    return {head: _nest(rest, value) if rest else value}


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable key of config class `cls`, dotted for nested groups (`checkpoint.resume`)."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_key_message(key: str, valid: list[str], every_key: list[str]) -> str:
    """Suggest the closest key at this level, else a key at any depth ending in the same name
    (`resume` -> `checkpoint.resume`), else the closest dotted key."""
    leaf = key.rpartition(".")[2]
    close = (
        difflib.get_close_matches(key, valid, n=1)
        or [k for k in every_key if k.rpartition(".")[2] == leaf]
        or difflib.get_close_matches(key, every_key, n=1)
    )
    hint = f" Did you mean {' or '.join(repr(k) for k in close[:3])}?" if close else ""
    return f"unknown config key {key!r}.{hint} Valid keys: {', '.join(valid)}"
