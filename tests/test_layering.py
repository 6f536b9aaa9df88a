"""The house's shape, written down: the rooms of ``auditor`` in the order of the data flow
(load -> attribute -> score -> detect -> store -> report, with the runner, the lab and the
command line on top), and the rule that a module imports only from its own room or the
rooms below it. Every import counts: inside functions and under ``TYPE_CHECKING`` too. No
module is over :data:`MAX_LINES` lines, and every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import auditor

ROOT = Path(auditor.__file__).parent
MAX_LINES = 400

FLOORS: tuple[tuple[str, ...], ...] = (
    ("_version", "errors"),  # what everything may use
    ("progress", "rundir", "accumulate"),  # progress bar; run directory; streamed state
    ("models",),  # load: the model
    ("data",),  # load: the data
    ("attribution",),  # attribute
    ("scoring",),  # score
    ("config",),  # the settings of the stages below, read by those above
    ("detect",),  # detect
    ("record", "run", "history"),  # store: the typed run record, the run directory, the history
    ("report",),  # report
    ("runner",),  # the audit as a whole
    ("lab",),  # planted-shortcut data and models, the demo
    ("cli",),  # the command line
    ("auditor", "__main__"),  # the public API and python -m auditor
)
"""Each module's room is its first name under ``auditor`` (``auditor.detect.rule``: detect)."""


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ("auditor", *path.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The ``auditor`` modules that ``path`` imports anywhere (functions and
    ``TYPE_CHECKING`` blocks included)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1],
                                 *filter(None, [base])])  # fmt: skip
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in known else base)
    return {m for m in found if m in known and m != name}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def floor(module: str) -> int:
    for number, rooms in enumerate(FLOORS):
        if room(module) in rooms:
            return number
    raise AssertionError(f"{module}: its room {room(module)!r} is on no floor of FLOORS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def graph() -> dict[str, set[str]]:
    names = module_names()
    return {name: imports(path, name, set(names)) for name, path in names.items()}


def test_no_import_circle_among_auditor_modules():
    found = graph()
    assert {"auditor.run", "auditor.runner.batch"} <= found["auditor.runner.pipeline"]
    assert cycles(found) == []


def test_no_module_imports_a_room_above_its_own():
    upward = sorted(
        f"{a} -> {b}" for a, targets in graph().items() for b in targets if floor(b) > floor(a)
    )
    assert upward == []


def test_no_module_is_over_the_limit():
    long = {name: n for name, path in module_names().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}  # fmt: skip
    assert long == {}


def test_the_rules_find_what_they_forbid(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert floor("auditor.runner.batch") > floor("auditor.detect.rule") > floor("auditor.data")
    tree = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from auditor.run import X\n"
    path = tmp_path / "x.py"
    path.write_text(tree)
    assert imports(path, "auditor.detect.x", {"auditor.run"}) == {"auditor.run"}


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module in a clean interpreter state of ``auditor`` (third-party modules stay)."""
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(set(module_names()) - {'auditor.__main__'})!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'auditor']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
