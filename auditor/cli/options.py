"""Command-line options made from the settings' fields (:mod:`auditor.config.settings`): a
setting is one field, and its option, type, range and help come from it. Every option
defaults to None (not given), so the config file or the field's default decides."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import click

from auditor.config import AuditConfig, described, settings_of


def flag_of(key: str, f: dataclasses.Field[Any]) -> str:
    """The option of a setting: its own ``flag``, else ``--name-with-dashes`` (``detect.min_n``:
    ``--detect-min-n``)."""
    about = described(f)
    assert about is not None
    return about.flag or "--" + key.replace(".", "-").replace("_", "-")


def parameter(key: str) -> str:
    """The command's parameter name of a setting (``detect.min_n``: ``detect__min_n``)."""
    return key.replace(".", "__")


def setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``command`` with one option per setting of :class:`AuditConfig`."""
    hints = {
        **typing.get_type_hints(AuditConfig),
        **{f"detect.{k}": v for k, v in typing.get_type_hints(type(AuditConfig().detect)).items()},
    }
    for key, f in reversed(settings_of(AuditConfig)):
        command = _option(key, f, hints[key])(command)
    return command


def overrides(given: dict[str, Any]) -> dict[str, Any]:
    """The settings the command line gave, by key (``detect.min_n``), from the parameters of
    a command decorated with :func:`setting_options` (None: not given)."""
    out = {}
    for key, _ in settings_of(AuditConfig):
        value = given.get(parameter(key))
        out[key] = None if value == () else value
    return out


def _option(key: str, f: dataclasses.Field[Any], hint: Any) -> Callable[..., Any]:
    about = described(f)
    assert about is not None
    flag, name = flag_of(key, f), parameter(key)
    kind = _plain(hint)
    extra: dict[str, Any] = {"default": None, "help": about.meaning}
    if kind is bool:
        return click.option(f"{flag}/--no-{flag.removeprefix('--')}", name, **extra)
    if typing.get_origin(kind) is Literal:
        return click.option(flag, name, type=click.Choice(typing.get_args(kind)), **extra)
    if typing.get_origin(kind) is tuple:
        if about.listed == "repeat":
            return click.option(flag, name, multiple=True, **extra | {"default": ()})
        return click.option(flag, name, callback=_comma_list, metavar="A,B,...", **extra)
    if about.path:
        extra["type"] = click.Path(dir_okay=False, exists=True)
    else:
        extra["type"] = {int: click.INT, float: click.FLOAT}.get(kind, click.STRING)
    return click.option(flag, name, **extra)


def _plain(hint: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _comma_list(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())
