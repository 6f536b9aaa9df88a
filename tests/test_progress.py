"""Progress off a terminal is a few plain lines, never a redrawn bar; on one it is tqdm."""

from __future__ import annotations

import io
from pathlib import Path

from tqdm import tqdm

import auditor
from auditor.progress import LineProgress, progress_bar


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
