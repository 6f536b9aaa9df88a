"""Resume an interrupted audit: the rows and the bounded evidence are saved as it goes.

The checkpoint is saved at most every ``every_s`` seconds and whenever the loop is
interrupted, in proportion to what is new: the rows since the last save go to a new part
file (``.partial.rows-00001.pt``, ...), written once and never again, and the head
(``.partial.pt``: the digests, the number of samples done, the bounded evidence and how many
row parts belong to it) is replaced atomically last. A part written after the last head
(a save interrupted in between) is ignored and overwritten.

It is keyed by the digests of everything that decides a row
(:func:`auditor.runner.provenance.input_parts`): a checkpoint whose parts differ is set
aside as ``.partial.pt.stale`` with a notice naming what changed, and the audit starts
afresh; rows of two different audits are never merged. It holds only tensors and plain
values, so it loads with ``torch.load(weights_only=True)``.

In memory the rows are kept in columns per batch (:class:`Rows`): numbers in arrays, the
rest in lists, a fraction of the size of one dict per row.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from auditor.accumulate import Composite, Keyed
from auditor.run import torch_bytes
from auditor.rundir import atomic_write
from auditor.runner.exemplars import ClassEvidence
from auditor.runner.provenance import PART_NAMES, changed_parts

log = logging.getLogger(__name__)

Column = torch.Tensor | list[Any]


def columnar(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict[str, Column]:
    """Rows as columns: a tensor where every value is a bool, an int or a float (of one
    kind), else the list of values."""
    out: dict[str, Column] = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        kinds = {type(v) for v in values}
        if len(kinds) == 1 and kinds <= {bool, int, float}:
            dtype = {bool: torch.bool, int: torch.int64, float: torch.float64}[kinds.pop()]
            out[name] = torch.tensor(values, dtype=dtype)
        else:
            out[name] = values
    return out


@dataclass
class Rows:
    """The rows audited so far, as columnar chunks (one per batch, or per saved part). An
    :class:`~auditor.accumulate.Accumulator` whose merge appends: rows of ranks merged
    rank after rank are put back in batch order by
    :func:`~auditor.runner.distributed.in_batch_order`. The checkpoint saves its state in
    parts, only what is new each time (:meth:`merged`)."""

    columns: tuple[str, ...]
    chunks: list[dict[str, Column]] = field(default_factory=list)

    def update(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.chunks.append(columnar(rows, self.columns))

    def empty(self) -> Rows:
        return Rows(self.columns)

    def merge(self, other: Rows) -> None:
        self.chunks.extend(other.chunks)

    def state(self) -> dict[str, Column]:
        return self.merged(0)

    def load(self, state: dict[str, Column]) -> None:
        self.chunks.append(dict(state))

    def frame(self) -> pd.DataFrame:
        """All rows as one frame, typed as a frame made from the row dicts would be."""
        data = {
            name: list(itertools.chain.from_iterable(_values(c[name]) for c in self.chunks))
            for name in self.columns
        }
        return pd.DataFrame(data, columns=list(self.columns))

    def merged(self, start: int) -> dict[str, Column]:
        """The chunks from ``start`` on, as one chunk (what a save adds)."""
        chunks = self.chunks[start:]
        out: dict[str, Column] = {}
        for name in self.columns:
            tensors = [t for c in chunks if isinstance(t := c[name], torch.Tensor)]
            if len(tensors) == len(chunks) and len({t.dtype for t in tensors}) == 1:
                out[name] = torch.cat(tensors)
            else:
                out[name] = list(itertools.chain.from_iterable(_values(c[name]) for c in chunks))
        return out

    def __len__(self) -> int:
        return sum(len(_values(next(iter(c.values())))) for c in self.chunks if c)


def _values(column: Column) -> list[Any]:
    return column.tolist() if isinstance(column, torch.Tensor) else column


@dataclass
class Progress(Composite):
    """What has been audited so far: rows, evidence per class, and samples done."""

    rows: Rows
    evidence: Keyed[ClassEvidence]
    done: int = 0


@dataclass(frozen=True)
class Resume:
    """What loading a checkpoint found: none (``fresh``), one it ``resumed`` after ``done``
    samples, or one it ``set_aside`` because it was ``unreadable`` (the error's type) or
    the ``changed`` parts of its inputs differ (keys of
    :data:`~auditor.runner.provenance.PART_NAMES`). Kept in ``run.json`` as ``checkpoint``."""

    outcome: Literal["fresh", "resumed", "set_aside"]
    done: int = 0
    changed: tuple[str, ...] = ()
    unreadable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "done": self.done, "changed": list(self.changed),
                "unreadable": self.unreadable}  # fmt: skip


@dataclass
class Checkpoint:
    path: Path | None
    parts: dict[str, str]
    every_s: float = 30.0
    found: Resume = Resume("fresh")  # what the last load found
    _last: float = field(default_factory=time.monotonic)
    _saved_parts: int = 0  # row part files that belong to the current head
    _saved_chunks: int = 0  # in-memory chunks already in those part files

    def load(self, fresh: Progress) -> Progress:
        """The saved progress when its parts match ``parts``, else ``fresh``."""
        if self.path is None or not self.path.is_file():
            self.discard_parts()
            return fresh
        progress = fresh.empty()
        try:
            state = torch.load(self.path, weights_only=True)
            saved = dict(state["parts"])
            progress.evidence.load(state["evidence"])
            progress.done = int(state["done"])
            n_parts = int(state["row_parts"])
            for i in range(1, n_parts + 1):
                progress.rows.load(torch.load(self._part(i), weights_only=True))
        except Exception as exc:  # a damaged or older checkpoint only costs the time to redo it
            self.found = Resume("set_aside", unreadable=type(exc).__name__)
            self._set_aside(f"it cannot be read ({type(exc).__name__})")
            return fresh
        changed = changed_parts(saved, self.parts)
        if changed:
            self.found = Resume("set_aside", changed=tuple(changed))
            words = ", ".join(PART_NAMES[k] for k in changed)
            self._set_aside(f"{words} changed since it was written")
            return fresh
        self._saved_parts, self._saved_chunks = n_parts, len(progress.rows.chunks)
        self.found = Resume("resumed", done=progress.done)
        log.warning("%s: resuming after %d samples", self.path, progress.done)
        return progress

    def maybe_save(self, progress: Progress, *, force: bool = False) -> None:
        """Save the rows added since the last save as a new part, then the head."""
        if self.path is None or not (force or time.monotonic() - self._last >= self.every_s):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        parts = self._saved_parts
        if len(progress.rows.chunks) > self._saved_chunks:
            new = progress.rows.merged(self._saved_chunks)
            parts += 1
            atomic_write(self._part(parts), torch_bytes(new))
        state = {
            "parts": self.parts,
            "done": progress.done,
            "row_parts": parts,
            "evidence": progress.evidence.state(),
        }
        atomic_write(self.path, torch_bytes(state))
        self._saved_parts, self._saved_chunks = parts, len(progress.rows.chunks)
        self._last = time.monotonic()

    def discard(self) -> None:
        """Remove the checkpoint (the run it was for is complete)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.discard_parts()

    def discard_parts(self) -> None:
        if self.path is not None:
            for part in self.path.parent.glob(f"{self._stem}.rows-*.pt"):
                part.unlink(missing_ok=True)

    @property
    def _stem(self) -> str:
        assert self.path is not None
        return self.path.name.removesuffix(".pt")

    def _part(self, number: int) -> Path:
        assert self.path is not None
        return self.path.with_name(f"{self._stem}.rows-{number:05d}.pt")

    def _set_aside(self, why: str) -> None:
        assert self.path is not None
        stale = self.path.with_name(self.path.name + ".stale")
        os.replace(self.path, stale)
        self.discard_parts()
        log.warning("%s: not resumed, %s; set aside as %s.", self.path, why, stale.name)
