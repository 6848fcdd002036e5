"""Typed mappings: a dataclass built from a mapping of YAML values, each checked against its
field's annotation, without PyTorch.

:class:`ConfigError` is every configuration problem a user can fix: its message is one line
naming the key and what is allowed. :func:`build_dataclass` is how a config's sections
(:mod:`fdrl.config`) and the components' specs (:mod:`fdrl.components`) are read.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message says how."""


def type_name(tp: Any) -> str:
    """``tp`` as a message names it: ``int``, ``list[int]``, ``null``."""
    if tp is type(None):
        return "null"
    return str(tp) if typing.get_origin(tp) else getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ConfigError naming ``key`` if it does
    not fit); ints are accepted where floats are, and a union takes the first member that fits."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of keys, got {type(value).__name__}")
        return build_dataclass(tp, value, key + ".")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list of {type_name(item_tp)}, got {value!r}")
        return [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        if len(options) == 1:
            return coerce(value, options[0], key)
        problem = None
        for option in options:
            try:
                return coerce(value, option, key)
            except ConfigError as err:
                if isinstance(value, typing.get_origin(option) or option):
                    problem = err  # the member of the value's own kind says what is wrong inside it
        if problem is not None:
            raise problem
        names = " or ".join(type_name(a) for a in typing.get_args(tp))
        raise ConfigError(f"{key} must be {names}, got {value!r} ({type(value).__name__})")
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        except (ValueError, OverflowError):
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key} must be {type_name(tp)}, got {value!r} ({type(value).__name__})")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """``cls`` built from ``values``, each coerced to its field's annotation; ConfigError for a key
    that is not a field (listing the fields, named with ``prefix``) or a value that does not fit."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(values) - set(names))  # YAML keys may be numbers
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {', '.join(prefix + n for n in names)}"
        )
    return cls(**{k: coerce(v, hints[k], prefix + k) for k, v in values.items()})
