"""Writing settings: ``audit.toml`` with every setting at its default and its meaning above
it (``auditor init-config``), made from the fields, so a new setting is written too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditor._version import __version__
from auditor.config.schema import AuditConfig, DetectConfig
from auditor.config.settings import described, settings_of
from auditor.errors import OutputError


def config_toml() -> str:
    """The commented ``audit.toml``; it loads back to ``AuditConfig()``."""
    lines = [
        "# Settings of `auditor audit --config audit.toml`, written by `auditor init-config`",
        f"# (auditor {__version__}). Every setting is at its default; options given on the",
        "# command line win over this file. Settings unset by default are commented out.",
        *_toml_lines(AuditConfig()),
        "",
        "# Thresholds of the flag rule (docs/judging.md: How a class is judged).",
        "[detect]",
        *_toml_lines(DetectConfig()),
    ]
    return "\n".join(lines) + "\n"


def write_config(path: str | Path, *, force: bool = False) -> None:
    """Write :func:`config_toml` to ``path``; an existing file is kept unless ``force``."""
    path = Path(path)
    try:
        with path.open("w" if force else "x", encoding="utf-8") as file:
            file.write(config_toml())
    except FileExistsError:
        raise OutputError(f"{path}: already exists; add --force to overwrite it.") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the config ({exc.strerror}).") from None


def _toml_lines(settings: Any) -> list[str]:
    """The settings of one table (not those of the tables inside it)."""
    lines = []
    for key, f in settings_of(settings):
        if "." in key:
            continue
        about, value = described(f), getattr(settings, f.name)
        assert about is not None
        lines += ["", f"# {about.meaning}"]
        if value is None:
            lines.append(f"# {f.name} = {toml_value(about.example)}")
        else:
            lines.append(f"{f.name} = {toml_value(value)}")
    return lines


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"No TOML form for a setting of type {type(value).__name__}: {value!r}.")
