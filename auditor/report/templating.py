"""The Jinja2 environment of every page auditor writes: templates packaged in
``auditor.templates``, autoescaped, and ``StrictUndefined`` so a missing key fails the render."""

from __future__ import annotations

from importlib.resources import files

import jinja2


def environment() -> jinja2.Environment:
    folder = files("auditor.templates")
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (folder / name).read_text(encoding="utf-8")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def stylesheet() -> str:
    return (files("auditor.templates") / "report.css").read_text(encoding="utf-8")
