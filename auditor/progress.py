"""Progress of a long loop: a redrawn bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with a carriage return on every update. In a file (cron, CI,
``make demo > log``) each redraw stays, hundreds per training run. Off a terminal,
:class:`LineProgress` writes a line at most every ``every`` seconds and one at the end, so a
log says how far a phase got and how long it took, and nothing else.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, TextIO

from tqdm.auto import tqdm


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
    :class:`LineProgress`; nothing at all with ``disable``."""
    stream = sys.stderr if stream is None else stream
    options = {"total": total, "initial": initial, "desc": desc, "unit": unit}
    if disable or _is_terminal(stream):
        return tqdm(**options, file=stream, disable=disable)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, stream=stream, every=every)


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
