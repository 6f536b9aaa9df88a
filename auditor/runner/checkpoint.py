"""Resume an interrupted audit: the rows and the bounded evidence are saved as it goes.

The checkpoint (``.partial.pt`` in the run directory) is written atomically at most every
``every_s`` seconds and whenever the loop is interrupted. It is keyed by the digests of
everything that decides a row (:func:`auditor.runner.provenance.input_parts`): a checkpoint whose
parts differ is set aside as ``.partial.pt.stale`` with a notice naming what changed, and
the audit starts afresh; rows of two different audits are never merged. It holds only
tensors and plain values, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from auditor.rundir import atomic_write
from auditor.runner.exemplars import ClassEvidence
from auditor.runner.provenance import changed_parts

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What has been audited so far: rows, evidence per class, and samples done."""

    rows: list[dict[str, Any]]
    evidence: dict[int, ClassEvidence]
    done: int = 0


@dataclass
class Checkpoint:
    path: Path | None
    parts: dict[str, str]
    every_s: float = 30.0
    _last: float = field(default_factory=time.monotonic)

    def load(self, fresh: Progress) -> Progress:
        """The saved progress when its parts match ``parts``, else ``fresh``."""
        if self.path is None or not self.path.is_file():
            return fresh
        try:
            state = torch.load(self.path, weights_only=True)
            saved = dict(state["parts"])
            evidence = {int(k): ClassEvidence.from_state(v) for k, v in state["evidence"].items()}
            progress = Progress(list(state["rows"]), evidence, done=int(state["done"]))
        except Exception as exc:  # a damaged or older checkpoint only costs the time to redo it
            self._set_aside(f"it cannot be read ({type(exc).__name__})")
            return fresh
        changed = changed_parts(saved, self.parts)
        if changed:
            self._set_aside(f"{', '.join(changed)} changed since it was written")
            return fresh
        log.warning("%s: resuming after %d samples", self.path, progress.done)
        return progress

    def maybe_save(self, progress: Progress, *, force: bool = False) -> None:
        if self.path is None or not (force or time.monotonic() - self._last >= self.every_s):
            return
        state = {
            "parts": self.parts,
            "done": progress.done,
            "rows": progress.rows,
            "evidence": {k: v.state() for k, v in progress.evidence.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))
        self._last = time.monotonic()

    def _set_aside(self, why: str) -> None:
        assert self.path is not None
        stale = self.path.with_name(self.path.name + ".stale")
        os.replace(self.path, stale)
        log.warning("%s: not resumed, %s; set aside as %s.", self.path, why, stale.name)
