"""Every setting checked once, from its annotation and its :class:`~auditor.config.settings.
Setting`: the type (an int is no float and a bool no int, a string is no list of names),
then the range."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from auditor.config.settings import described
from auditor.errors import ConfigError


def check_settings(settings: Any, *, prefix: str = "") -> None:
    """Raise :class:`ConfigError` naming the first field of the dataclass ``settings`` whose
    value is not of its annotated type or lies outside its range."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, hint, about = getattr(settings, f.name), hints[f.name], described(f)
        if about is None:
            continue  # a table, checked on its own
        if not is_a(value, hint):
            raise ConfigError(
                f"Expected {prefix}{f.name} to be {describe(hint)}, "
                f"got {value!r:.60} ({type(value).__name__})."
            )
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and not about.holds(value):
            raise ConfigError(f"Expected {prefix}{f.name} {about.bounds()}, got {value}.")


def is_a(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (types.UnionType, typing.Union):
        return any(is_a(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(is_a(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(hint, type) and isinstance(value, hint)


def describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe(a) for a in args)
    if origin is tuple:
        return "a list of strings" if args[0] is str else f"a list of {describe(args[0])}"
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return words.get(hint, "absent" if hint is type(None) else getattr(hint, "__name__", str(hint)))
