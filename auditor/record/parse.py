"""Reading and writing a typed record as JSON: one generic parser for the record's frozen
dataclasses, driven by their annotations, so a field is named and typed in one place and a
damaged file fails in one place, with one line naming the file and the field.

Types a field may have: ``str``, ``int`` (not a bool), ``float`` (an int is welcome; JSON's
``null`` where the annotation allows ``None``, which is how NaN is stored), ``bool``,
``Literal[...]``, ``X | None``, ``list[X]``, ``dict[str, X]``, another record dataclass, and
``Any`` (taken as it is). A field with a default may be missing (a file of an earlier
version); a key the dataclass does not know is kept in its ``extra`` field when it has one,
else ignored. A field whose JSON key differs from its name says so in its metadata
(``key``)."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Literal

NONE = type(None)


class RecordError(ValueError):
    """A value of a record is not what its field says; ``where`` is the field's path."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"`{where}` {message}")
        self.where = where


def key_of(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key", f.name))


def parse(kind: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as ``kind``; :class:`RecordError` naming ``where`` otherwise."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        return _union(args, value, where)
    if value is None:
        raise RecordError(where, f"must be {describe(kind)}, got null")
    if origin is Literal:
        if value not in args:
            raise RecordError(where, f"is {str(value)[:40]!r}, not one of {', '.join(args)}")
        return value
    if origin is list:
        _expect(isinstance(value, list), where, "a list", value)
        return [parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _expect(isinstance(value, dict), where, "an object", value)
        return {str(k): parse(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, where)  # type: ignore[arg-type]
    return _scalar(kind, value, where)


def from_dict(kind: type, value: Any, where: str) -> Any:
    """The dataclass ``kind`` from the JSON object ``value``."""
    _expect(isinstance(value, dict), where, "an object", value)
    hints = _hints(kind)
    known = {}
    names = set()
    for f in dataclasses.fields(kind):
        if f.name == "extra":
            continue
        key = key_of(f)
        names.add(key)
        place = f"{where}.{key}" if where else key
        if key in value:
            known[f.name] = parse(hints[f.name], value[key], place)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(place, "missing")
    if "extra" in {f.name for f in dataclasses.fields(kind)}:
        known["extra"] = {k: v for k, v in value.items() if k not in names}
    return kind(**known)


def to_dict(record: Any) -> Any:
    """The record as plain JSON values (tuples as lists; ``extra`` keys kept)."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(record):
            value = getattr(record, f.name)
            if f.name == "extra":
                out |= {k: v for k, v in value.items() if k not in out}
            elif not (f.metadata.get("omit_none") and value is None):
                out[key_of(f)] = to_dict(value)
        return out
    if isinstance(record, dict):
        return {str(k): to_dict(v) for k, v in record.items()}
    if isinstance(record, list | tuple):
        return [to_dict(v) for v in record]
    if isinstance(record, float) and not math.isfinite(record):
        return None
    return record


def describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(kind):
        return "an object"
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             NONE: "null"}  # fmt: skip
    return words.get(kind, getattr(kind, "__name__", str(kind)))


def _union(args: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None:
        if NONE in args:
            return None
        wanted = " or ".join(describe(a) for a in args)
        raise RecordError(where, f"must be {wanted}, got null")
    last: RecordError | None = None
    for arg in args:
        if arg is NONE:
            continue
        try:
            return parse(arg, value, where)
        except RecordError as exc:
            last = exc
    assert last is not None
    raise last


def _scalar(kind: Any, value: Any, where: str) -> Any:
    if kind is bool:
        _expect(isinstance(value, bool), where, "true or false", value)
    elif kind is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), where, "an integer", value)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _expect(ok, where, "a number", value)
        return float(value)
    elif kind is str:
        _expect(isinstance(value, str), where, "a string", value)
    else:
        raise TypeError(f"{where}: no JSON form for {kind!r}")
    return value


def _expect(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        raise RecordError(where, f"must be {what}, got {type(value).__name__}")


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)
