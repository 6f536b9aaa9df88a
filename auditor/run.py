"""The run record and the run directory: what ``--out`` holds, written so that a report can
be re-rendered from it without recomputing anything.

    report.html  report.pdf  summary.json  samples.parquet  run.json  evidence.pt

``evidence.pt`` holds the bounded exemplar thumbnails and per-class mean maps (tensors
only, readable with ``torch.load(weights_only=True)``). Reading a run checks each file
against what the report needs, so a damaged or hand-edited run gives one line naming the
file, never a traceback in the middle of rendering.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from auditor.errors import RunDirError
from auditor.rundir import atomic_write, check_complete


@dataclass
class AuditRun:
    """Everything an audit produced: the verdict and per-class results (``summary.json``),
    one row per image and method (``samples.parquet``), provenance (``run.json``) and the
    bounded exemplars (``evidence.pt``). :func:`save_run` writes it, :func:`load_run` reads it.
    """

    summary: dict[str, Any]
    samples: pd.DataFrame
    run_info: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per member image of each subgroup (``subgroups.parquet``); empty: none found."""
    reused: bool = False
    """Read back instead of audited: an earlier run of exactly these inputs (not stored)."""

    @property
    def verdict(self) -> str:
        return str(self.summary["verdict"])

    @property
    def flagged_classes(self) -> list[str]:
        return list(self.summary["flagged_classes"])

    def _repr_html_(self) -> str:
        from auditor.report.notebook import summary_html

        return summary_html(self.summary)


FILES = ("summary.json", "samples.parquet", "run.json", "evidence.pt")
REPORTS = ("report.html", "report.pdf")
OPTIONAL = ("subgroups.parquet",)
SAMPLE_KEYS = ("sample", "image_id", "file_name", "label", "method", "chance_corrected",
               "skip_reason", "skip_detail")  # fmt: skip


def save_run(run: AuditRun, out: str | Path) -> Path:
    """Write the machine-readable files of ``run`` into ``out`` (created if missing).

    Each file is written to a temporary name and renamed, so an interrupted run never
    leaves a half-written file under a final name.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "summary.json", _json(run.summary))
    atomic_write(out / "samples.parquet", lambda p: run.samples.to_parquet(p, index=False))
    atomic_write(out / "evidence.pt", _torch_bytes(run.evidence))
    if not run.subgroups.empty:
        atomic_write(out / "subgroups.parquet", lambda p: run.subgroups.to_parquet(p, index=False))
    atomic_write(out / "run.json", _json(run.run_info))
    run.path = out
    return out


def clear_run(out: Path) -> None:
    """Remove the files of an earlier run from ``out`` before a new run is written."""
    for name in (*FILES, *OPTIONAL, *REPORTS):
        (out / name).unlink(missing_ok=True)


def load_run(path: str | Path) -> AuditRun:
    """Read a run directory written by :func:`save_run`; a missing ``evidence.pt`` gives a
    run without exemplars (and a warning), any damaged file or an unfinished run (``INCOMPLETE``)
    a :class:`RunDirError`."""
    path = Path(path)
    check_complete(path)
    missing = [name for name in FILES[:3] if not (path / name).is_file()]
    if missing:
        raise RunDirError(f"{path}: not an audit run directory ({', '.join(missing)} missing).")
    summary = _read_json(path / "summary.json")
    _check_summary(path / "summary.json", summary)
    run_info = _read_json(path / "run.json")
    _check_run_info(path / "run.json", run_info)
    return AuditRun(
        summary=summary,
        samples=_read_samples(path / "samples.parquet"),
        run_info=run_info,
        evidence=_read_evidence(path / "evidence.pt"),
        path=path,
        subgroups=_read_subgroups(path / "subgroups.parquet"),
    )


def update_run_info(path: Path, **fields: Any) -> None:
    info = json.loads((path / "run.json").read_text())
    info.update(fields)
    atomic_write(path / "run.json", _json(info))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: cannot be read ({exc}).") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RunDirError(f"{path}: not valid JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(value).__name__}.")
    return value


def _check_summary(path: Path, summary: dict[str, Any]) -> None:
    _require(path, summary, {"verdict": str, "flagged_classes": list, "model": dict,
                             "dataset": dict, "methods": list, "classes": list})  # fmt: skip
    if not summary["methods"] or not all(isinstance(m, str) for m in summary["methods"]):
        raise RunDirError(f"{path}: `methods` must be a non-empty list of names.")
    _require(path, summary["dataset"], {"spec": str, "n_images": int, "n_skipped": int},
             where="dataset")  # fmt: skip
    for i, c in enumerate(summary["classes"]):
        if not isinstance(c, dict):
            raise RunDirError(f"{path}: classes[{i}] must be an object.")
        _require(path, c, {"index": int, "name": str, "n": int, "status": str, "reasons": list,
                           "metrics": dict}, where=f"classes[{i}]")  # fmt: skip


def _check_run_info(path: Path, info: dict[str, Any]) -> None:
    _require(path, info, {"created": str, "config": dict})
    _require(path, info["config"], {"detect": dict}, where="config")


def _require(path: Path, value: dict[str, Any], keys: dict[str, type], *, where: str = "") -> None:
    for key, kind in keys.items():
        name = f"{where}.{key}" if where else key
        if key not in value:
            raise RunDirError(f"{path}: `{name}` missing.")
        if not isinstance(value[key], kind) or (kind is int and isinstance(value[key], bool)):
            raise RunDirError(
                f"{path}: `{name}` must be a {kind.__name__}, got {type(value[key]).__name__}."
            )


def _read_samples(path: Path) -> pd.DataFrame:
    try:
        samples = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types for a damaged file
        raise RunDirError(f"{path}: not a readable Parquet file ({type(exc).__name__}).") from None
    missing = [k for k in SAMPLE_KEYS if k not in samples.columns]
    if missing:
        raise RunDirError(f"{path}: column(s) {', '.join(missing)} missing.")
    return samples


def _read_subgroups(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types for a damaged file
        raise RunDirError(f"{path}: not a readable Parquet file ({type(exc).__name__}).") from None


def _read_evidence(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}  # the report says so; the CLI warns
    try:
        evidence = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a hostile pickle is refused here, a truncated file fails here
        raise RunDirError(
            f"{path}: refused or unreadable ({type(exc).__name__}); it must hold only tensors "
            "and plain values, as auditor writes it."
        ) from None
    _check_evidence(path, evidence)
    return evidence


def _check_evidence(path: Path, evidence: Any) -> None:
    classes = evidence.get("classes") if isinstance(evidence, dict) else None
    if not isinstance(classes, dict):
        raise RunDirError(f"{path}: expected {{'classes': {{name: evidence}}}}.")
    subgroup_means = evidence.get("subgroup_means", {})
    if not isinstance(subgroup_means, dict):
        raise RunDirError(f"{path}: `subgroup_means` must map names to mean maps.")
    for mean in subgroup_means.values():
        if not isinstance(mean, torch.Tensor) or mean.dim() != 2:
            raise RunDirError(f"{path}: the subgroups' mean maps must be 2-D tensors.")
    for name, ev in classes.items():
        if not isinstance(ev, dict) or not isinstance(ev.get("means", {}), dict):
            raise RunDirError(f"{path}: evidence of class {name!r} must be an object.")
        for mean in ev.get("means", {}).values():
            if not isinstance(mean, torch.Tensor) or mean.dim() != 2:
                raise RunDirError(f"{path}: the mean maps of class {name!r} must be 2-D tensors.")
        for key in ("exemplars", "broken_exemplars"):
            for e in ev.get(key, []):
                _check_exemplar(path, name, e)
        drawn = ev.get("class_model")
        if drawn is not None and not (isinstance(drawn, torch.Tensor) and drawn.dim() == 3):
            raise RunDirError(f"{path}: the class-model image of class {name!r} is damaged.")


def _check_exemplar(path: Path, name: str, e: Any) -> None:
    image = e.get("image") if isinstance(e, dict) else None
    ok = isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3
    side = tuple(image.shape[1:]) if isinstance(image, torch.Tensor) and ok else None
    maps = e.get("maps") if ok else None
    ok = ok and isinstance(e.get("mask"), torch.Tensor) and tuple(e["mask"].shape) == side
    ok = (
        ok
        and isinstance(maps, dict)
        and all(isinstance(m, torch.Tensor) and tuple(m.shape) == side for m in maps.values())
    )
    fields = ("image_id", "file_name", "label", "prediction", "scores")
    if not ok or not all(k in e for k in fields):
        raise RunDirError(f"{path}: an exemplar of class {name!r} is damaged.")


def _torch_bytes(value: Any) -> bytes:
    """``torch.save`` into memory: the archive inside is named the same whatever the file is
    called, so the same evidence always gives the same bytes."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _json(value: Any) -> bytes:
    return (json.dumps(_clean(value), indent=2, allow_nan=False) + "\n").encode()


def _clean(value: Any) -> Any:
    """NaN and inf become null: summary.json must be strict JSON for CI gates."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
