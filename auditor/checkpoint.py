"""Resume an interrupted audit: the rows and the bounded evidence are saved as it goes.

The checkpoint (``.partial.pt`` in the run directory) is written atomically at most every
``every_s`` seconds and whenever the loop is interrupted, and it is keyed by a fingerprint
of the model, the data and the settings: a run with anything changed starts afresh. It
holds only tensors and plain values, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from auditor.exemplars import ClassEvidence

log = logging.getLogger(__name__)


def fingerprint(**parts: Any) -> str:
    """A stable digest of JSON-able parts (config dict, model and data hashes, sizes)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Progress:
    """What has been audited so far: rows, evidence per class, and samples done."""

    rows: list[dict[str, Any]]
    evidence: dict[int, ClassEvidence]
    done: int = 0


@dataclass
class Checkpoint:
    path: Path | None
    key: str
    every_s: float = 30.0
    _last: float = field(default_factory=time.monotonic)

    def load(self, fresh: Progress) -> Progress:
        """The saved progress when it matches ``key``, else ``fresh``."""
        if self.path is None or not self.path.is_file():
            return fresh
        try:
            state = torch.load(self.path, weights_only=True)
        except Exception as exc:  # a damaged checkpoint only costs the time to redo it
            log.warning("%s: unreadable checkpoint ignored (%s)", self.path, type(exc).__name__)
            return fresh
        if state.get("key") != self.key:
            log.info("%s: checkpoint of another model, data or config ignored", self.path)
            return fresh
        evidence = {int(k): ClassEvidence.from_state(v) for k, v in state["evidence"].items()}
        log.info("%s: resuming after %d samples", self.path, state["done"])
        return Progress(rows=state["rows"], evidence=evidence, done=int(state["done"]))

    def maybe_save(self, progress: Progress, *, force: bool = False) -> None:
        if self.path is None or not (force or time.monotonic() - self._last >= self.every_s):
            return
        state = {
            "key": self.key,
            "done": progress.done,
            "rows": progress.rows,
            "evidence": {k: v.state() for k, v in progress.evidence.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self._last = time.monotonic()

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
