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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from auditor.errors import RunDirError
from auditor.record import ClassRecord, RecordError, Summary, read_summary
from auditor.record.frames import class_frame
from auditor.rundir import (
    Output,
    atomic_write,
    check_complete,
    check_space,
    claim,
    mark_complete,
    mark_incomplete,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class AuditRun:
    """Everything an audit produced: the verdict and per-class results (``summary.json``),
    one row per image and method (``samples.parquet``), provenance (``run.json``) and the
    bounded exemplars (``evidence.pt``). :func:`save_run` writes it, :func:`load_run` reads it.

    In a notebook: :attr:`verdict`, :attr:`classes` (a DataFrame, one row per class),
    :attr:`samples` (a DataFrame, one row per audited image x method: ``sample``,
    ``image_id``, ``file_name``, ``label`` and ``prediction`` as class indices, ``correct``,
    ``method``, the scores ``energy_inside``, ``chance_corrected`` and ``lift``, the
    interventions' predictions ``pred_swapped``, ``pred_same_class``,
    ``pred_background_only`` with the label's probability under each, ``group.ATTR`` per
    ``--group-by``, and ``skip_reason``/``skip_detail`` for an image that was not scored),
    and :meth:`plot_class` (a class's mean maps and exemplars as a matplotlib ``Figure``).
    """

    summary: Summary
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
        return self.summary.verdict

    @property
    def flagged_classes(self) -> list[str]:
        return list(self.summary.flagged_classes)

    @property
    def classes(self) -> pd.DataFrame:
        """One row per class in the model's output order, from ``summary.json`` (columns:
        :func:`auditor.record.frames.class_frame`): the report's class table, to sort and
        filter instead of read."""
        return class_frame(self.summary)

    def class_record(self, name: str) -> ClassRecord:
        """The summary's record of class ``name``; a ``KeyError`` naming the run's classes
        for a name it did not audit."""
        for c in self.summary.classes:
            if c.name == name:
                return c
        known = ", ".join(repr(n) for n in self.summary.names)
        raise KeyError(f"No class {name!r} in this run; its classes are {known}.")

    def plot_class(self, name: str, *, exemplars: int = 3) -> Figure:
        """Class ``name``'s mean mask and mean map per method, then up to ``exemplars``
        images with each method's map over them: the report's pictures of the class, as a
        matplotlib ``Figure`` (not pyplot's: a notebook shows it when it is a cell's value).
        A ``KeyError`` naming the classes for an unknown name; a :class:`RunDirError` for a
        run without ``evidence.pt``, which has nothing to draw."""
        if not _CLASS_PLOT:  # auditor.report.notebook sets it whenever auditor is imported
            raise RuntimeError("No class plot is registered: import auditor first.")
        return _CLASS_PLOT[0](self, name, exemplars)


ClassPlot = Callable[[AuditRun, str, int], "Figure"]
_CLASS_PLOT: list[ClassPlot] = []


def draw_classes_with(plot: ClassPlot) -> None:
    """How :meth:`AuditRun.plot_class` draws: set at import by :mod:`auditor.report.notebook`,
    since the run record sits below the report and imports nothing from it (the layering)."""
    _CLASS_PLOT[:] = [plot]


FILES = ("summary.json", "samples.parquet", "run.json", "evidence.pt")
REPORTS = ("report.html", "report.pdf")
OPTIONAL = ("subgroups.parquet",)
SAMPLE_KEYS = ("sample", "image_id", "file_name", "label", "method", "chance_corrected",
               "skip_reason", "skip_detail")  # fmt: skip


AUDIT_RUN = Output("audit", files=(*FILES, *OPTIONAL, *REPORTS), legacy="run.json")
"""What ``--out`` of an audit holds; see :func:`auditor.rundir.claim`."""


def run_files(run: AuditRun) -> dict[str, bytes]:
    """The machine-readable files of ``run``, by name, in the order they are written
    (``run.json`` last)."""
    files = {
        "summary.json": _json(run.summary.to_dict()),
        "samples.parquet": _parquet_bytes(run.samples),
    }
    if run.evidence:  # a run read back without its evidence.pt is saved without one
        files["evidence.pt"] = torch_bytes(run.evidence)
    if not run.subgroups.empty:
        files["subgroups.parquet"] = _parquet_bytes(run.subgroups)
    return files | {"run.json": _json(run.run_info)}


def save_run(run: AuditRun, out: str | Path, *, reports: dict[str, bytes] | None = None) -> Path:
    """Write the files of ``run`` (and the rendered ``reports``, by name) into ``out``,
    replacing an earlier run's; ``out`` is created if missing, and must be new, empty or an
    earlier run's (:func:`auditor.rundir.claim`).

    Everything is made in memory first and checked to fit on the disk, so a full disk is
    one error while the earlier run is still whole. Then the directory is marked
    ``INCOMPLETE``, the earlier run's files go (none may stay beside this run's), and each
    file is written to a temporary name and renamed, ``run.json`` last, before the mark
    goes: a process killed at any moment leaves the earlier run or a marked directory."""
    out = Path(out)
    claim(out, AUDIT_RUN)
    files = (reports or {}) | run_files(run)
    check_space(out, files)
    mark_incomplete(out)
    clear_run(out)
    for name, payload in files.items():
        atomic_write(out / name, payload)
    mark_complete(out)
    run.path = out
    return out


def clear_run(out: Path) -> None:
    """Remove the files of an earlier run from ``out`` before a new run is written (only
    into a folder :func:`auditor.rundir.claim` made an audit run's)."""
    for name in AUDIT_RUN.files:
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
    summary = _read_summary(path / "summary.json")
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
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise RunDirError(
            f"{path}: holds a number with more digits than a JSON reader accepts (4,300)."
        ) from None
    if not isinstance(value, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(value).__name__}.")
    return value


def _read_summary(path: Path) -> Summary:
    try:
        return read_summary(_read_json(path))
    except RecordError as exc:
        raise RunDirError(f"{path}: {exc}.") from None


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


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def torch_bytes(value: Any) -> bytes:
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
