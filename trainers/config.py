"""Typed configuration: dataclasses <- YAML <- dotted command-line overrides.

The dotted keys (`head.m=0.3`, `train.lr=1e-3`) are the same keys Tune's search spaces use. Free-form
sections (a head's or encoder's keyword arguments) are plain dicts; whoever builds the object from
them checks the names (see `build_head`), so a misspelt key still fails at config time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it."""


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build dataclass `cls` from nested dicts, refusing keys that do not exist."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{where}{unknown[0]}"
        raise ConfigError(f"unknown config key '{name}'; known keys{' under ' + where.rstrip('.') if where else ''}: "
                          f"{', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{where}{key}' must be a mapping, got {value!r}")
            kwargs[key] = from_dict(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key '{name}' must be {hint.__name__}, got {value!r}")
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"config key '{name}' must be a mapping, got {value!r}")
    if origin in (list, tuple) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key '{name}' must be a list, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable = (),
                base: dict | None = None) -> T:
    """Defaults of `cls` <- `base` <- YAML file <- overrides, validated once at the end. An override is
    `"key=value"` (the value parsed as YAML: what `--set` gives) or a `(key, value)` pair taken as it is
    (what a shorthand flag gives: a path stays the string it is, `#` and digits included)."""
    data = to_dict(cls())
    for layer in (base or {}), _read_yaml(path):
        _merge(data, layer, cls)
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        set_dotted(data, key, value)
    cfg = from_dict(cls, data)
    _check_local_mode(cfg)
    return cfg


def _check_local_mode(cfg) -> None:
    """scale.local_mode runs no Ray Train callbacks, so a job's tracker (--tracker) would log no epoch: refused
    before any data is read (trainers.loop.fit refuses callbacks again, for Tune's)."""
    if getattr(getattr(cfg, "scale", None), "local_mode", False):
        from trainers import tracking

        if tracking.active():
            raise ConfigError("--tracker logs each epoch from Ray Train workers: scale.local_mode=true runs none "
                              "(drop one of the two)")


def _read_yaml(path: str | Path | None) -> dict:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections")
    return data


def _merge(into: dict, layer: dict, cls: type) -> None:
    """Merge a YAML layer into the config's data: sections (dataclasses) merge key by key; any other
    value, free-form dicts included (a head's or an encoder's keyword arguments), is replaced whole,
    so `head: {name: sphereface2}` does not inherit the default head's keywords."""
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    for key, value in layer.items():
        hint = hints.get(key)
        if isinstance(value, dict) and isinstance(into.get(key), dict) and dataclasses.is_dataclass(hint):
            _merge(into[key], value, hint)
        else:
            into[key] = value


def config_hash(cfg: Any) -> str:
    """12 hex digits identifying a config dataclass (or plain JSON-able data)."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

