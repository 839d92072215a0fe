"""Typed hyper-parameters: dataclass fields with defaults, help and bounds.

Every method and augment declares a ``Config`` dataclass whose fields are made with
:func:`hp`. This module parses ``--set KEY=VALUE`` strings and TOML values into those
fields, checks bounds and choices, and describes the fields for ``sslzoo info``.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args, get_origin

from sslzoo.errors import ConfigError, closest

_MISSING = dataclasses.MISSING


def hp(default: Any, help: str, *, gt: float | None = None, ge: float | None = None,
       lt: float | None = None, le: float | None = None,
       choices: Iterable[Any] | None = None) -> Any:
    """A hyper-parameter field: default, help text and the bounds it must respect.

    Mutable defaults (lists) are copied per instance; tuples are used as they are.
    """
    meta = {"help": help, "gt": gt, "ge": ge, "lt": lt, "le": le,
            "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    name: str
    type: str
    default: Any
    help: str


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a dataclass (works with postponed annotations)."""
    return typing.get_type_hints(cls)


def describe(cls: type) -> list[FieldInfo]:
    """Name, type, default and help of every field of a Config dataclass."""
    hints = field_types(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)  # type: ignore[misc]
        out.append(FieldInfo(f.name, type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return out


def type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if _is_optional(tp):
        return type_name(_strip_optional(tp)) + " | None"
    if get_origin(tp) is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"comma-separated {type_name(args[0])}s"
        return "tuple[" + ", ".join(type_name(a) for a in args) + "]"
    return getattr(tp, "__name__", str(tp))


def build(cls: type, values: Mapping[str, Any] | None = None, *, where: str = "--set") -> Any:
    """Construct ``cls`` from (possibly string) values and validate every field.

    Raises:
        ConfigError: an unknown key (naming the valid ones), an ill-typed value or one
            outside the field's bounds.
    """
    values = dict(values or {})
    hints = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        close = closest(unknown[0], fields)
        suggestion = (f"did you mean {' or '.join(repr(c) for c in close)}"
                      f" ({_flag(where, close[0])}=...)? " if close else "")
        raise ConfigError(
            f"unknown key {unknown[0]!r} for {cls.__qualname__}; {suggestion}valid keys: "
            + ", ".join(sorted(fields)))
    kwargs = {k: convert(v, hints[k], k, where) for k, v in values.items()}
    try:
        config = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {cls.__qualname__}: {exc}") from None
    validate(config, where)
    return config


def validate(config: Any, where: str = "--set") -> None:
    """Check every field against the bounds and choices given to :func:`hp`.

    A sequence (a ``(low, high)`` pair) must respect the bounds element by element; the
    message names the element and the bound that failed.
    """
    for f in dataclasses.fields(config):
        value, m = getattr(config, f.name), f.metadata
        if value is None:
            continue
        problems = _bound_problems(value, m)
        choices = m.get("choices")
        if choices is not None and value not in choices:
            problems.append("must be one of " + ", ".join(repr(c) for c in choices))
        if problems:
            default = f.default if f.default is not _MISSING else None
            hint = (f"; set it with {_flag(where, f.name)}={format_value(default)}"
                    if default is not None else "")
            text = " and ".join(problems)
            sep = "" if text.startswith("'") else " "
            raise ConfigError(f"{f.name}{sep}{text}, got {format_repr(value)}{hint}")


_BOUNDS = (("gt", ">", lambda v, b: v > b), ("ge", ">=", lambda v, b: v >= b),
           ("lt", "<", lambda v, b: v < b), ("le", "<=", lambda v, b: v <= b))


def _bound_problems(value: Any, meta: Mapping[str, Any]) -> list[str]:
    """What ``value`` (a number or a sequence of numbers) breaks of the field's bounds,
    e.g. ``["must be > 0"]`` or ``["'s first value 0.0 must be > 0"]``."""
    sequence = isinstance(value, (tuple, list))
    items = list(value) if sequence else [value]
    problems = []
    for key, op, ok in _BOUNDS:
        bound = meta.get(key)
        if bound is None:
            continue
        for i, v in enumerate(items):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return ["must hold numbers"]
            if not ok(v, bound):
                problems.append(f"'s {_ordinal(i)} value {v!r} must be {op} {bound}"
                                if sequence else f"must be {op} {bound}")
    return problems


def _ordinal(i: int) -> str:
    return {0: "first", 1: "second", 2: "third"}.get(i, f"{i + 1}th")


def format_repr(value: Any) -> str:
    """A value in an error message: pairs as ``(0.4, 1.0)`` whether tuple or list."""
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(repr(v) for v in value) + ")"
    return repr(value)


def convert(value: Any, tp: Any, name: str = "value", where: str = "--set") -> Any:
    """Convert a CLI string or TOML value to the field type ``tp``."""
    try:
        return _convert(value, tp)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} expects {type_name(tp)}, got {value!r}; e.g. {_flag(where, name)}="
            + _example(tp)) from None


def _flag(where: str, name: str) -> str:
    """``--set temperature`` or ``--set aug.crop_scale``."""
    if where == "--":
        return "--" + name.replace("_", "-")
    return f"{where}{name}" if where.endswith(".") else f"{where} {name}"


def _convert(value: Any, tp: Any) -> Any:
    if _is_optional(tp):
        inner = _strip_optional(tp)
        # an optional name or path keeps "none" (the augment pipeline of that name)
        nulls = ("",) if inner is str else ("none", "null", "")
        if value is None or (isinstance(value, str) and value.lower() in nulls):
            return None
        return _convert(value, inner)
    origin = get_origin(tp)
    if origin is Literal:
        for choice in get_args(tp):
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise ValueError(value)
    if origin is tuple:
        args = get_args(tp)
        items = [s.strip() for s in value.strip("()[] ").split(",") if s.strip()] \
            if isinstance(value, str) else list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in items)
        if len(items) != len(args):
            raise ValueError(value)
        return tuple(_convert(v, a) for v, a in zip(items, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(value)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    return value


def _is_optional(tp: Any) -> bool:
    return get_origin(tp) in (typing.Union, types.UnionType) and type(None) in get_args(tp)


def _strip_optional(tp: Any) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # type: ignore[return-value]


def _example(tp: Any) -> str:
    if _is_optional(tp):
        return _example(_strip_optional(tp))
    if get_origin(tp) is Literal:
        return str(get_args(tp)[0])
    if get_origin(tp) is tuple:
        return "0.2,1.0"
    return {bool: "true", int: "10", float: "0.5", str: "name"}.get(tp, "...")


def format_value(value: Any) -> str:
    """A value as it would be typed after ``--set KEY=``."""
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["a=1", "aug.b=x"]`` -> ``{"a": "1", "aug.b": "x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def check_round_trip(config: Any, section: str, where: str = "--set") -> None:
    """Raise :class:`ConfigError` unless ``config`` survives JSON (``config.json``).

    The plain values of :func:`to_dict` go through ``json`` and :func:`build` again and
    must give back equal values field by field, so that what trains can be loaded.

    Args:
        config: a Config dataclass instance.
        section: where it sits in ``config.json`` (``method``, ``augment``), for messages.
        where: how the user sets a field, for messages.
    """
    cls = type(config)
    saved = json.loads(json.dumps(to_dict(config), default=str))
    try:
        back = build(cls, saved, where=where)
    except ConfigError as exc:
        raise ConfigError(f"the {section} configuration would not load back from config.json: "
                          f"{exc}") from None
    hints = field_types(cls)
    for f in dataclasses.fields(config):
        before, after = getattr(config, f.name), getattr(back, f.name)
        if not _same_value(before, after):
            raise ConfigError(
                f"{section} field {f.name!r} (annotated {type_name(hints[f.name])}) does not "
                f"survive config.json: {before!r} is read back as {after!r}; annotate it with a "
                "type sslzoo parses (bool, int, float, str, Literal[...], tuple[float, ...], "
                "tuple[float, float], or X | None)")


def _same_value(a: Any, b: Any) -> bool:
    """Equal, and the same kind of container (a tuple read back as a list is not)."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_value, a, b))
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def to_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Tables of plain values as TOML (tomli-w). TOML has no null, so a key whose value is
    ``None`` is left out: it keeps its default, which for every optional field is ``None``."""
    import tomli_w

    return tomli_w.dumps({name: {k: _plain(v) for k, v in t.items() if v is not None}
                          for name, t in tables.items()})


def to_dict(config: Any) -> dict[str, Any]:
    """A Config as plain JSON-able values (tuples become lists)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
