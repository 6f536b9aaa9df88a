"""``auditor compare``, and the comparison an audit makes with the previous run of its model:
find the runs (a directory, a history id, ``latest`` or ``previous``), read each under a
shared lock, compare them (:mod:`auditor.detect.compare`) and write ``compare.json`` and
``compare.html``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor._version import __version__
from auditor.config import DetectConfig
from auditor.detect.compare import REGRESSION_MARGIN, Comparison, Judgement, Side, compare
from auditor.errors import RunDirError
from auditor.history import History, HistoryRun, previous_of
from auditor.report.compare_report import write_compare_reports
from auditor.run import AuditRun, load_run
from auditor.rundir import Output, RunLock, atomic_write, claim

NEEDED_COLUMNS = ("image_id", "label", "method", "correct", "chance_corrected", "skip_reason")
EXIT_REGRESSION = 4


@dataclass(frozen=True)
class Compared:
    """Two runs and their comparison; ``payload`` is ``compare.json``."""

    before: AuditRun
    after: AuditRun
    comparison: Comparison
    payload: dict[str, Any]


COMPARISON = Output("compare", files=("compare.json", "compare.html"), legacy="compare.json")
"""What ``auditor compare --out`` holds."""


def resolve(
    ref: str, history: History | None, *, model: str | None = None, name: str | None = None
) -> Path:
    """The run directory ``ref`` names: a folder, a history id, or ``latest``/``previous``
    (the newest complete run of the audit ``name``, and the one before; without a name, of
    the audit whose run is newest, among the runs of ``model`` when given)."""
    if Path(ref).is_dir():
        return Path(ref)
    if history is None:
        raise RunDirError(f"{ref}: no such run directory (and no history to look it up in).")
    if ref.isdigit():
        run = history.get(int(ref))
        if run is None:
            raise RunDirError(f"{history.path}: no run with id {ref}.")
        return _present(run)
    if ref in ("latest", "previous"):
        newest = history.runs(name=name, model=model, last=1)
        if not newest:
            which = " ".join(f"of {w}" for w in (name, model) if w)
            raise RunDirError(f"{history.path}: no run{' ' + which if which else ''} yet.")
        audit = name or newest[0].name
        latest = previous_of(history, audit)
        found = (
            latest if ref == "latest" or latest is None else previous_of(history, audit, latest.id)
        )
        if found is None:
            raise RunDirError(f"{history.path}: no {ref} complete run of the audit {audit}.")
        return Path(found.run_dir)
    raise RunDirError(f"{ref}: not a run directory, a history id, 'latest' or 'previous'.")


def _present(run: HistoryRun) -> Path:
    if not run.present:
        raise RunDirError(f"run {run.id}: its directory {run.run_dir} is missing or incomplete.")
    return Path(run.run_dir)


def read_side(path: Path) -> tuple[AuditRun, Side]:
    """A run read under a shared lock (never one being written), with what compare needs."""
    with RunLock(path, purpose="auditor compare", shared=True):
        run = load_run(path)
    return run, side_of(run)


def side_of(run: AuditRun) -> Side:
    where = run.path or Path("?")
    missing = [c for c in NEEDED_COLUMNS if c not in run.samples.columns]
    if missing:
        version = run.run_info.get("auditor_version", "an older auditor")
        raise RunDirError(
            f"{where / 'samples.parquet'}: column(s) {', '.join(missing)} missing (written by "
            f"auditor {version}); compare needs them."
        )
    detect = run.run_info["config"]["detect"]
    known = {k: v for k, v in detect.items() if k in DetectConfig.__dataclass_fields__}
    try:
        config = DetectConfig(**known)
    except (ValueError, TypeError) as exc:
        raise RunDirError(f"{where / 'run.json'}: config.detect is damaged ({exc})") from None
    inputs = run.run_info.get("inputs", {})
    summary = run.summary
    classes = [Judgement(c.index, c.name, c.status) for c in summary.classes]
    return Side(classes, summary.methods, summary.primary_method, run.samples, config,
                inputs.get("data_sha256"))  # fmt: skip


def compare_runs(before: AuditRun, after: AuditRun, *, margin: float) -> Compared:
    comparison = compare(side_of(before), side_of(after), margin=margin)
    payload = {
        "schema_version": 1,
        "auditor_version": __version__,
        "before": _run_facts(before),
        "after": _run_facts(after),
        **comparison.to_dict(),
    }
    return Compared(before, after, comparison, payload)


def compare_to_dir(
    ref_before: str,
    ref_after: str,
    *,
    out: Path | None,
    history: History | None,
    model: str | None = None,
    name: str | None = None,
    margin: float = REGRESSION_MARGIN,
) -> Compared:
    """Compare two runs; with ``out``, write ``compare.json`` and ``compare.html`` there."""
    before, _ = read_side(resolve(ref_before, history, model=model, name=name))
    after, _ = read_side(resolve(ref_after, history, model=model, name=name))
    compared = compare_runs(before, after, margin=margin)
    if out is not None:
        claim(out, COMPARISON)
        with RunLock(out, purpose="auditor compare"):
            atomic_write(out / "compare.json", _json(compared.payload))
            write_compare_reports(compared.payload, out)
    return compared


def _run_facts(run: AuditRun) -> dict[str, Any]:
    inputs = run.run_info.get("inputs", {})
    return {
        "run_dir": str(run.path) if run.path else None,
        "created": run.run_info.get("created"),
        "model": run.summary.model.spec,
        "model_sha256": inputs.get("model_sha256") or run.summary.model.sha256,
        "data": run.summary.dataset.spec,
        "data_sha256": inputs.get("data_sha256"),
        "verdict": run.summary.verdict,
        "auditor_version": run.run_info.get("auditor_version"),
    }


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, allow_nan=False) + "\n").encode()
