"""Progress off a terminal is a few plain lines, never a redrawn bar; on one it is tqdm; in a
Jupyter kernel it is tqdm's widget, or its plain bar without ipywidgets."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from tqdm import tqdm

import auditor
from auditor import progress
from auditor.progress import LineProgress, in_notebook, progress_bar


class Clock:
    """Time that moves only when told, so the lines written do not depend on the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_many_updates_give_a_line_every_ten_seconds_and_a_last_one():
    stream, clock = io.StringIO(), Clock()
    with LineProgress(9600, desc="train shortcut", stream=stream, clock=clock) as bar:
        for _ in range(9600 // 32):  # 300 batches, 0.5 s each: 150 s
            clock.now += 0.5
            bar.update(32)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 150 // 10 + 1
    assert lines[0] == "train shortcut: 640/9600 img (7%), 10 s"
    assert lines[-1] == "train shortcut: 9600/9600 img (100%) in 150 s"


def test_a_fast_loop_off_a_terminal_writes_only_its_last_line():
    stream = io.StringIO()
    with progress_bar(100_000, desc="audit", initial=500, stream=stream) as bar:
        for _ in range(99_500):
            bar.update(1)
    assert stream.getvalue().startswith("audit: 100000/100000 img (100%) in ")
    assert stream.getvalue().count("\n") == 1


def test_close_writes_once_and_an_unknown_total_is_a_plain_count():
    stream = io.StringIO()
    bar = LineProgress(0, desc="scan", unit="files", stream=stream, clock=Clock())
    bar.update(7)
    bar.close()
    bar.close()
    assert stream.getvalue() == "scan: 7 files in 0 s\n"


def test_a_terminal_gets_a_tqdm_bar_and_disable_writes_nothing():
    terminal = Terminal()
    with progress_bar(10, desc="audit", stream=terminal) as bar:
        assert isinstance(bar, tqdm)
        bar.update(10)
    assert "\r" in terminal.getvalue()
    quiet = io.StringIO()
    with progress_bar(10, desc="audit", stream=quiet, disable=True) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_no_module_but_progress_uses_tqdm_itself():
    root = Path(auditor.__file__).parent
    users = [p.name for p in root.rglob("*.py") if "import tqdm" in p.read_text()]
    assert users == ["progress.py"]


class Widget:
    """Stands in for an ipywidgets widget: keeps what tqdm sets on it."""

    def __init__(self, *, children: tuple[object, ...] = (), **kwargs: object) -> None:
        self.value, self.bar_style, self.children = 0, "", children
        self.layout = SimpleNamespace(width=None, flex=None, display=None)
        self.style = SimpleNamespace(bar_color=None)

    def close(self) -> None:
        pass


@pytest.fixture
def kernel(monkeypatch):
    """A Jupyter kernel as progress.py sees one: ipykernel loaded, a shell with a kernel."""
    shell = SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", fake)
    return shell


def test_a_kernel_is_told_from_a_script_and_a_terminal_ipython(kernel, monkeypatch):
    assert in_notebook()
    monkeypatch.setattr(kernel, "kernel", None)  # terminal IPython: a shell, no kernel
    assert not in_notebook()
    monkeypatch.delitem(sys.modules, "ipykernel")
    assert not in_notebook()


def test_a_notebook_gets_tqdms_widget(monkeypatch, capsys):
    from tqdm import notebook

    shown = []
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    for name in ("IProgress", "HTML", "TqdmHBox"):
        monkeypatch.setattr(notebook, name, Widget, raising=False)  # absent without ipywidgets
    monkeypatch.setattr(notebook, "display", shown.append, raising=False)
    with progress_bar(10, desc="audit") as bar:
        assert isinstance(bar, notebook.tqdm)
        bar.update(10)
    assert len(shown) == 1 and shown[0].children[1].value == 10
    assert shown[0].children[1].bar_style == "success"
    assert capsys.readouterr().err == ""


def test_a_notebook_without_ipywidgets_gets_tqdms_plain_bar(monkeypatch, capsys):
    from tqdm import notebook

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(notebook, "IProgress", None)  # as tqdm leaves it without ipywidgets
    with progress_bar(10, desc="audit") as bar:
        assert isinstance(bar, tqdm) and not isinstance(bar, notebook.tqdm)
        bar.update(10)
    err = capsys.readouterr().err
    assert "\r" in err and "audit: 100%" in err
    stream = io.StringIO()  # a stream given is written as off a notebook
    with progress_bar(10, desc="audit", stream=stream) as bar:
        assert isinstance(bar, LineProgress)
