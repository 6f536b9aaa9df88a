"""Reading settings: an ``audit.toml`` or a dict, with overrides from the command line. An
unknown key is an error that names the nearest known one, or the table it belongs in."""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from auditor.config.schema import AuditConfig, DetectConfig
from auditor.config.settings import settings_of
from auditor.errors import ConfigError


def load_config(path: str | Path, **overrides: Any) -> AuditConfig:
    """Read an ``audit.toml``; keyword overrides (from the CLI) win over the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}).") from None
    return config_from_dict(raw, source=str(path), **overrides)


def config_from_dict(
    raw: dict[str, Any], *, source: str = "config", **overrides: Any
) -> AuditConfig:
    """Settings from ``raw`` (a TOML document's tables) with ``overrides`` (None: not given)
    winning, ``detect.NAME`` keys for the ``[detect]`` table."""
    raw = dict(raw)
    detect_raw = raw.pop("detect", {})
    if not isinstance(detect_raw, dict):
        raise ConfigError(f"{source}: expected a [detect] table, got {detect_raw!r:.40}.")
    top = {key for key, _ in settings_of(AuditConfig) if "." not in key}
    detect = {key for key, _ in settings_of(DetectConfig)}
    unknown = [_unknown(k, top, other=detect, where="[detect]") for k in sorted(set(raw) - top)]
    unknown += [
        _unknown(k, detect, other=top, where="the top level, above [detect]", prefix="detect.")
        for k in sorted(set(detect_raw) - detect)
    ]
    if unknown:
        raise ConfigError(f"{source}: {' '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    detect_raw |= {k.removeprefix("detect."): v for k, v in given.items() if "." in k}
    values = raw | {k: v for k, v in given.items() if "." not in k}
    try:
        return AuditConfig(**values, detect=DetectConfig(**detect_raw))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _unknown(key: str, known: set[str], *, other: set[str], where: str, prefix: str = "") -> str:
    """The error for one unknown key, with the nearest known one (a typo is the usual cause),
    or the table it belongs in."""
    if key in other:
        return f"unknown key {prefix + key!r}; it belongs in {where}."
    nearest = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {prefix + nearest[0]!r}?" if nearest else "."
    return f"unknown key {prefix + key!r}{hint}"
