"""Griffe extension for the API page: two things the docstrings say in their own way.

- The docstrings name other objects with Sphinx roles (``:func:`save_run```); Markdown would
  print the role. They become inline code (``save_run``; ``~a.b`` keeps the last part).
- A setting of :class:`auditor.AuditConfig` (and its ``[detect]`` table) is described once,
  in its field's ``setting(default, meaning, ...)`` call, which also gives its command-line
  option and the comment ``auditor init-config`` writes. The page shows that meaning, with
  the option and the TOML key, as the attribute's docstring. It is read from the source, as
  griffe reads everything, so building the documentation imports no torch.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj):`~?([^`]+)`")
TABLES = {"AuditConfig": "", "DetectConfig": "detect."}


class AuditorDocstrings(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "auditor":
            return
        self._settings(pkg)
        self._roles(pkg, seen=set())

    def _settings(self, pkg: griffe.Module) -> None:
        for name, prefix in TABLES.items():
            cls = pkg[f"config.schema.{name}"]
            for attribute in cls.members.values():
                about = _setting(attribute.value) if attribute.is_attribute else None
                if about is None:
                    continue
                meaning, flag = about
                key = prefix + attribute.name
                flag = flag or "--" + key.replace(".", "-").replace("_", "-")
                text = f"{meaning} Option `{flag}`; TOML key `{attribute.name}`"
                text += " in the `[detect]` table." if prefix else "."
                attribute.docstring = griffe.Docstring(text, parent=attribute)

    def _roles(self, obj: griffe.Object | griffe.Alias, *, seen: set[str]) -> None:
        if obj.is_alias or obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
        for member in obj.members.values():
            self._roles(member, seen=seen)


def _setting(value: Any) -> tuple[str, str | None] | None:
    """The meaning and the explicit ``flag`` of a ``setting(default, meaning, ...)`` call, read
    from the source (the same rule as ``auditor.cli.options.flag_of``), or None."""
    if not isinstance(value, griffe.ExprCall) or str(value.function) != "setting":
        return None
    positional = [a for a in value.arguments if not isinstance(a, griffe.ExprKeyword)]
    keywords = {a.name: a.value for a in value.arguments if isinstance(a, griffe.ExprKeyword)}
    flag = keywords.get("flag")
    return ast.literal_eval(str(positional[1])), ast.literal_eval(str(flag)) if flag else None


def _code(match: re.Match[str]) -> str:
    """``:func:`~a.b.c``` -> ``c`` in backticks; ``:func:`a.b``` -> ``a.b``."""
    whole = match.group(0)
    name = match.group(1)
    return f"`{name.rsplit('.', 1)[-1] if '`~' in whole else name}`"
