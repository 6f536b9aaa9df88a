"""One setting, described once: a dataclass field whose metadata says what it means (the
comment ``auditor init-config`` writes and the help of its command-line option), its option
name, the range it must lie in, and an example for a setting unset by default. The TOML key,
the command-line option, the check and the documentation all come from here, so a new
setting is one field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Setting:
    """What a settings field's metadata holds (see :func:`setting`)."""

    meaning: str
    flag: str | None = None
    example: Any = None
    low: float | None = None
    high: float | None = None
    open: bool = False
    listed: Literal["comma", "repeat"] = "comma"
    path: bool = False

    def bounds(self) -> str | None:
        """The range in words (``>= 0``, ``in [0, 1]``, ``in (0, 1)``), None when unbounded."""
        if self.low is not None and self.high is not None:
            left, right = ("(", ")") if self.open else ("[", "]")
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.open else '>='} {self.low:g}"
        return None

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open else value <= self.high)


def setting(
    default: Any,
    meaning: str,
    *,
    flag: str | None = None,
    example: Any = None,
    low: float | None = None,
    high: float | None = None,
    open: bool = False,
    listed: Literal["comma", "repeat"] = "comma",
    path: bool = False,
) -> Any:
    """A settings field with its :class:`Setting`: ``meaning`` is one line; ``flag`` the
    command-line option when it is not ``--name-with-dashes``; ``low``/``high`` the range
    (inclusive, or exclusive with ``open``); ``example`` what init-config shows for a setting
    whose default is None; ``listed`` how a list is given on the command line (one
    comma-separated option, or the option repeated); ``path`` a file that must exist."""
    described = Setting(meaning, flag, example, low, high, open, listed, path)
    return dataclasses.field(default=default, metadata={"setting": described})


def described(f: dataclasses.Field[Any]) -> Setting | None:
    """A field's :class:`Setting`; None for a table of settings (``detect``)."""
    found = f.metadata.get("setting")
    return found if isinstance(found, Setting) else None


def settings_of(settings: Any, *, prefix: str = "") -> list[tuple[str, dataclasses.Field[Any]]]:
    """Every setting of a settings dataclass (class or instance), its tables' included, as
    (key, field): ``detect.min_n`` for the ``[detect]`` table's ``min_n``."""
    found: list[tuple[str, dataclasses.Field[Any]]] = []
    for f in dataclasses.fields(settings):
        if described(f) is not None:
            found.append((prefix + f.name, f))
        else:
            table = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if table is not None and dataclasses.is_dataclass(table):
                found += settings_of(table, prefix=f"{prefix}{f.name}.")
    return found
