"""Progress of a long loop: a redrawn bar on a terminal, plain lines in a log, a widget in a
notebook.

A tqdm bar redraws itself with a carriage return on every update. In a file (cron, CI,
``make demo > log``) each redraw stays, hundreds per training run. Off a terminal,
:class:`LineProgress` writes a line at most every ``every`` seconds and one at the end, so a
log says how far a phase got and how long it took, and nothing else.

A Jupyter kernel's stderr is no terminal either, but its output area redraws: there the
bar is tqdm's notebook widget, or tqdm's plain bar where ipywidgets is not installed (the
output area handles its carriage returns), never a crash for want of a widget library.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, TextIO

from tqdm import tqdm


class ProgressBar(Protocol):
    """What loops need of a progress display: tqdm's ``update`` and ``close``, and ``with``."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> object: ...


def progress_bar(
    total: int,
    *,
    desc: str,
    unit: str = "img",
    initial: int = 0,
    disable: bool = False,
    stream: TextIO | None = None,
    every: float = 10.0,
) -> ProgressBar:
    """A tqdm bar on ``stream`` (default: stderr) when it is a terminal, else a
    :class:`LineProgress`; in a Jupyter kernel with no ``stream`` given, a notebook bar
    (:func:`notebook_bar`); nothing at all with ``disable``."""
    options = {"total": total, "initial": initial, "desc": desc, "unit": unit}
    if not disable and stream is None and in_notebook():
        return notebook_bar(**options)
    stream = sys.stderr if stream is None else stream
    if disable or _is_terminal(stream):
        return tqdm(**options, file=stream, disable=disable)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, stream=stream, every=every)


def in_notebook() -> bool:
    """True in a Jupyter kernel: ipykernel loaded and IPython's shell attached to a kernel
    (not a terminal IPython, not a script that merely imported ipykernel). Reads only
    modules already loaded, so asking costs no import."""
    ipython = sys.modules.get("IPython")
    if "ipykernel" not in sys.modules or ipython is None:
        return False
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None) is not None


def notebook_bar(**options: object) -> ProgressBar:
    """tqdm's notebook widget, or its plain bar on stderr where ipywidgets is missing (tqdm
    would raise on the first widget it makes)."""
    try:
        from tqdm import notebook
    except ImportError:  # IPython missing or broken: no widgets either
        notebook = None
    if notebook is None or getattr(notebook, "IProgress", None) is None:
        return tqdm(**options, file=sys.stderr)
    return notebook.tqdm(**options)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LineProgress:
    """``desc: done/total unit (percent), seconds`` at most every ``every`` seconds, and a
    last line on :meth:`close` saying how long it all took. ``clock`` is for tests."""

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "img",
        initial: int = 0,
        stream: TextIO,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream, self.every, self.clock = stream, every, clock
        self.start = self.last = clock()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self._write(f"{self._count()}, {now - self.start:.0f} s")

    def close(self) -> None:
        """Write the last line, once."""
        if not self.closed:
            self.closed = True
            self._write(f"{self._count()} in {self.clock() - self.start:.0f} s")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _count(self) -> str:
        if self.total <= 0:
            return f"{self.n} {self.unit}"
        return f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)"

    def _write(self, text: str) -> None:
        self.stream.write(f"{self.desc}: {text}\n")
        self.stream.flush()
