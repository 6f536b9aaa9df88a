"""The Jinja2 environment of every page auditor writes: templates packaged in
``auditor.templates``, autoescaped, and ``StrictUndefined`` so a missing key fails the render.

Every value a template prints is bounded (:func:`bounded`): a class name, reason or file
name of any length in the data (the full value stays in ``summary.json``) becomes at most
:data:`MAX_TEXT` characters with a mark, so no string can make a report huge or slow to
lay out. Names in headings and tables go through the ``short`` filter, shorter still."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import jinja2
from markupsafe import Markup

MAX_TEXT = 2000
"""The most characters of one value a page prints (images, as ``data:`` URIs, excepted)."""
MAX_NAME = 100
"""The most characters of a name (a class, a group, a file) in a heading or a table cell."""


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with how much was left out."""
    if len(text) <= limit:
        return text
    kept = max(limit - len(f"… [{len(text):,} more characters]"), 1)
    return f"{text[:kept]}… [{len(text) - kept:,} more characters]"


MAX_NAMED = 10
"""Names a sentence lists before it says how many more there are."""


def named(names: list[str], *, sep: str = ", ") -> str:
    """At most :data:`MAX_NAMED` names, each shortened, then how many more there are."""
    listed = sep.join(shorten(str(n), MAX_NAME) for n in names[:MAX_NAMED])
    more = len(names) - MAX_NAMED
    return listed + (f" and {more} more (see the class table)" if more > 0 else "")


def bounded(value: Any) -> Any:
    """Jinja's ``finalize``: plain strings past :data:`MAX_TEXT` are shortened; markup the
    templates mark safe (the stylesheet) and ``data:`` URIs (the pictures) pass whole."""
    if isinstance(value, str) and not isinstance(value, Markup) and not value.startswith("data:"):
        return shorten(value, MAX_TEXT)
    return value


def environment() -> jinja2.Environment:
    folder = files("auditor.templates")
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (folder / name).read_text(encoding="utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=bounded,
    )
    env.filters["short"] = lambda text: shorten(str(text), MAX_NAME)
    return env


def stylesheet() -> str:
    return (files("auditor.templates") / "report.css").read_text(encoding="utf-8")
