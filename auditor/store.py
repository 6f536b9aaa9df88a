"""The run directory: what ``--out`` holds, written so that a report can be re-rendered
from it without recomputing anything.

    report.html  report.pdf  summary.json  samples.parquet  run.json  evidence.pt

``evidence.pt`` holds the bounded exemplar thumbnails and per-class mean maps (tensors
only, readable with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from auditor.errors import DataError
from auditor.pipeline import AuditRun

FILES = ("summary.json", "samples.parquet", "run.json", "evidence.pt")


def save_run(run: AuditRun, out: str | Path) -> Path:
    """Write the machine-readable files of ``run`` into ``out`` (created if missing).

    Each file is written to a temporary name and renamed, so an interrupted run never
    leaves a half-written file under a final name.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "summary.json", lambda p: p.write_text(_json(run.summary)))
    _atomic(out / "run.json", lambda p: p.write_text(_json(run.run_info)))
    _atomic(out / "samples.parquet", lambda p: run.samples.to_parquet(p, index=False))
    _atomic(out / "evidence.pt", lambda p: torch.save(run.evidence, p))
    run.path = out
    return out


def load_run(path: str | Path) -> AuditRun:
    """Read a run directory written by :func:`save_run`."""
    path = Path(path)
    missing = [name for name in FILES[:3] if not (path / name).is_file()]
    if missing:
        raise DataError(f"{path}: not an audit run directory ({', '.join(missing)} missing).")
    evidence_path = path / "evidence.pt"
    evidence = torch.load(evidence_path, weights_only=True) if evidence_path.is_file() else {}
    return AuditRun(
        summary=json.loads((path / "summary.json").read_text()),
        samples=pd.read_parquet(path / "samples.parquet"),
        run_info=json.loads((path / "run.json").read_text()),
        evidence=evidence,
        path=path,
    )


def update_run_info(path: Path, **fields: Any) -> None:
    info = json.loads((path / "run.json").read_text())
    info.update(fields)
    _atomic(path / "run.json", lambda p: p.write_text(_json(info)))


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _json(value: Any) -> str:
    return json.dumps(_clean(value), indent=2, allow_nan=False) + "\n"


def _clean(value: Any) -> Any:
    """NaN and inf become null: summary.json must be strict JSON for CI gates."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
