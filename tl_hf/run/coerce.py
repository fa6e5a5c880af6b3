"""Typed coercion of config values: YAML values, and strings typed on the command line (:class:`OverrideStr`), are
converted to the type of their dataclass field, or a :class:`~tl_hf._errors.ConfigError` names the key.

YAML's ``1e-4`` is a *string* for PyYAML: it becomes a float here. :func:`coerce` dispatches on the field type to one
small function per kind of type (union, literal, bool, int, float, str, enum, list, dict, dataclass).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from typing import Any, Callable, Literal, Mapping, Union

import yaml

from tl_hf._errors import ConfigError, did_you_mean, one_line

__all__ = ["OverrideStr", "build_dataclass", "coerce", "parse_scalar", "type_name", "unknown_message"]

_NONE = type(None)
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULLS = ("null", "~", "None")


class OverrideStr(str):
    """A value typed on the command line: parsed by the type of its field (a str field keeps it verbatim)."""


def type_name(tp: Any) -> str:
    """How a type reads in messages and help: ``int | null``, ``one of 'a', 'b'``, ``list[str]``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]" if args else getattr(origin, "__name__", "")
    if tp is _NONE:
        return "null"
    return getattr(tp, "__name__", str(tp))


def parse_scalar(text: str) -> Any:
    """``text`` read as a YAML value (``[a, b]``, ``{x: 1}``, ``3``); the text itself when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return str(text)


def unknown_message(key: str, valid, what: str, *, section: str | None = None, where: str = "",
                    extra: str = "") -> str:
    """``unknown config key 'data.x'; did you mean data.y? Valid keys of data: ...`` (long lists are not spelled out)."""
    valid = list(valid)
    name = f"{section}.{key}" if section else key
    msg = f"unknown config {what} {name!r}{where}"
    msg += did_you_mean(key, valid, quote=False, prefix=f"{section}." if section else "")
    if len(valid) <= 25:
        msg += f" Valid {what}s{(' of ' + section) if section else ''}: {', '.join(valid)}"
    else:
        msg += f" Valid keys: the fields{extra}."
    return msg


def build_dataclass(cls: type, value: Any, path: str):
    """An instance of the dataclass ``cls`` from a mapping, every key coerced to its field type and checked."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path} must be a mapping of keys to values, got {value!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, v in value.items():
        if key not in valid:
            raise ConfigError(unknown_message(str(key), valid, "key", section=path))
        kwargs[key] = coerce(v, hints[key], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        msg = one_line(exc)
        raise ConfigError(msg if msg.startswith(path.split(".")[0]) else f"{path}: {msg}") from None


def coerce(value: Any, tp: Any, path: str, *, in_union: bool = False) -> Any:
    """Convert ``value`` (from YAML, or a string from the command line) to type ``tp``, or raise ConfigError."""
    if tp is Any or tp is object:
        return parse_scalar(value) if isinstance(value, OverrideStr) else value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, path)
    if value is None:
        raise _bad(path, tp, value)
    for applies, convert in _BY_TYPE:
        if applies(tp, origin):
            return convert(value, tp, path, in_union)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _bad(path, tp, value)


def _bad(path: str, tp: Any, value: Any) -> ConfigError:
    if isinstance(value, bool):
        word, words = ("no", "no/off/false") if value is False else ("yes", "yes/on/true")
        key = path.rsplit(".", 1)[-1]
        return ConfigError(f"{path}: expected {type_name(tp)}, but YAML turned the unquoted value into the boolean "
                           f"{str(value).lower()} (YAML 1.1 reads {words} as booleans); quote it to keep the text, "
                           f"e.g. {key}: \"{word}\"")
    return ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")


def _finite(value: float, tp: Any, path: str) -> float:
    """Non-finite numbers (``inf``, ``nan``) are refused: no field of a run means them (one rule for every key)."""
    if not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite {type_name(tp)}, got {value!r}")
    return value


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _is_instance(value: Any, tp: Any) -> bool:
    """Whether ``value`` already has type ``tp`` (a union tries such a member first, before any conversion)."""
    if tp in (int, float) and isinstance(value, bool):
        return False
    if tp is float and isinstance(value, int):
        return False
    origin = typing.get_origin(tp) or tp
    if origin is Literal:
        return value in typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, Mapping) or isinstance(value, tp)
    if origin in (list, tuple, typing.Sequence):
        return isinstance(value, (list, tuple))
    return isinstance(origin, type) and isinstance(value, origin)


def _coerce_union(value: Any, tp: Any, path: str) -> Any:
    """null if allowed; enum members by value; a member the value already is; then conversions (str last)."""
    args = typing.get_args(tp)
    members = [a for a in args if a is not _NONE]
    if value is None or (isinstance(value, OverrideStr) and value.strip() in _NULLS):
        if _NONE in args:
            return None
        raise _bad(path, tp, value)
    enums = [m for m in members if _is_enum(m)]
    if enums and isinstance(value, str):  # e.g. SchedulerType | str: TrainingArguments accepts only the members
        choices = [str(c.value) for e in enums for c in e]
        if value.strip() in choices:
            return value.strip()
        raise ConfigError(f"{path}: {value!r} is not valid" + did_you_mean(value, choices)
                          + f" Choices: {', '.join(choices[:15])}" + (" ..." if len(choices) > 15 else ""))
    if not isinstance(value, OverrideStr):
        for m in members:
            if _is_instance(value, m):
                return coerce(value, m, path, in_union=True)
    for m in sorted(members, key=lambda m: m is str or _is_enum(m)):  # a plain str accepts anything typed: last
        try:
            return coerce(value, m, path, in_union=True)
        except ConfigError:
            continue
    raise _bad(path, tp, value)


def _coerce_literal(value: Any, tp: Any, path: str, in_union: bool) -> Any:
    args = typing.get_args(tp)
    if value in args:
        return value
    raise ConfigError(f"{path}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")


def _coerce_bool(value: Any, tp: Any, path: str, in_union: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _bad(path, tp, value)


def _coerce_int(value: Any, tp: Any, path: str, in_union: bool) -> int:
    """Ints; integral floats (``3.0``, ``"1e3"``); strings with ``_`` separators. Never bools."""
    if isinstance(value, bool):
        raise _bad(path, tp, value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                raise _bad(path, tp, value) from None
            if f.is_integer():
                return int(f)
    raise _bad(path, tp, value)


def _coerce_float(value: Any, tp: Any, path: str, in_union: bool) -> float:
    if isinstance(value, bool):
        raise _bad(path, tp, value)
    if isinstance(value, (int, float)):
        return _finite(float(value), tp, path)
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            raise _bad(path, tp, value) from None
        return _finite(parsed, tp, path)
    raise _bad(path, tp, value)


def _coerce_str(value: Any, tp: Any, path: str, in_union: bool) -> str:
    """Strings; a number becomes its text, except inside a union (where another member should take it)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not in_union:
        return str(value)
    raise _bad(path, tp, value)


def _coerce_enum(value: Any, tp: Any, path: str, in_union: bool) -> Any:
    """An enum member or one of the members' values; returns the value."""
    if isinstance(value, tp):
        return value.value
    choices = [m.value for m in tp]
    if value in choices:
        return value
    raise ConfigError(f"{path}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def _coerce_list(value: Any, tp: Any, path: str, in_union: bool) -> list:
    """A list (``[a, b]`` parsed from a string); outside a union a single value becomes a one-item list."""
    if isinstance(value, str):
        parsed = parse_scalar(value) if value.strip().startswith("[") else None
        if isinstance(parsed, list):
            value = parsed
        elif in_union:
            raise _bad(path, tp, value)
        else:
            value = [value]
    if not isinstance(value, (list, tuple)):
        if in_union:
            raise _bad(path, tp, value)
        value = [value]
    args = typing.get_args(tp)
    item_tp = args[0] if args else Any
    return [coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]


def _coerce_dict(value: Any, tp: Any, path: str, in_union: bool) -> dict:
    if isinstance(value, str):
        parsed = parse_scalar(value)
        if not isinstance(parsed, dict):
            raise _bad(path, tp, value)
        value = parsed
    if not isinstance(value, Mapping):
        raise _bad(path, tp, value)
    args = typing.get_args(tp)
    if args:
        return {coerce(k, args[0], f"{path} key"): coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    return dict(value)


def _coerce_dataclass(value: Any, tp: Any, path: str, in_union: bool) -> Any:
    if isinstance(value, str):
        parsed = parse_scalar(value)
        if isinstance(parsed, dict):
            value = parsed
    return build_dataclass(tp, value, path)


#: (does this converter apply to (type, origin), converter), tried in order
_BY_TYPE: tuple[tuple[Callable[[Any, Any], bool], Callable[[Any, Any, str, bool], Any]], ...] = (
    (lambda tp, origin: origin is Literal, _coerce_literal),
    (lambda tp, origin: tp is bool, _coerce_bool),
    (lambda tp, origin: tp is int, _coerce_int),
    (lambda tp, origin: tp is float, _coerce_float),
    (lambda tp, origin: tp is str, _coerce_str),
    (lambda tp, origin: _is_enum(tp), _coerce_enum),
    (lambda tp, origin: origin in (list, tuple, typing.Sequence) or tp in (list, tuple), _coerce_list),
    (lambda tp, origin: origin is dict or tp is dict, _coerce_dict),
    (lambda tp, origin: dataclasses.is_dataclass(tp), _coerce_dataclass),
)
