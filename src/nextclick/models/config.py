"""Model configs: a frozen dataclass per model whose defaults are its paper's settings. Overrides
(`--set key=value`, a checkpoint's config.json, a grid candidate) are type-checked here, and unknown
keys rejected, with a message naming the option, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


class ConfigError(ValueError):
    pass


def config_from_overrides(config_class: type, overrides: dict[str, Any] | None = None, base: Any = None):
    """Build a model Config from {field: value}; values may be strings from the command line.
    Unknown keys and values of the wrong type are rejected with a message naming them."""
    base = base if base is not None else config_class()
    overrides = overrides or {}
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    changes = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise ConfigError(f"unknown option {key!r} for {config_class.__qualname__}; options: {', '.join(fields)}")
        changes[key] = _coerce(key, value, hints[key])
    return dataclasses.replace(base, **changes)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    target = args[0] if (origin is typing.Union or str(origin) == "<class 'types.UnionType'>") and args else hint
    if typing.get_origin(target) is typing.Literal:
        choices = typing.get_args(target)
        if value not in choices:
            raise ConfigError(f"option {key!r} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if target is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if target is float:
            return float(value)
        if target is str:
            return str(value)
        if typing.get_origin(target) is tuple:
            parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
            inner = typing.get_args(target)[0]
            return tuple(inner(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"option {key!r} expects {getattr(target, '__name__', target)}; got {value!r}") from None
    return value

