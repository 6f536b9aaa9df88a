"""The one path from a model and a dataset to a finished run directory, shared by
``auditor audit`` and ``auditor demo``: audit -> compare with the previous run -> store ->
report -> history.

The run directory is locked for the whole job and checked to be writable before the model
is loaded, so a bad ``--out`` costs nothing and two audits never interleave their files.
While its final files are replaced it carries ``INCOMPLETE`` (:mod:`auditor.rundir`): a
process killed at any moment leaves the earlier complete run, or a marked directory beside
a resumable checkpoint. The history row is added once the directory is complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from auditor.config import AuditConfig
from auditor.errors import AuditorError
from auditor.history import History, open_history, previous_of
from auditor.models import LoadedModel
from auditor.report.render import rerender, write_reports
from auditor.run import AuditRun, clear_run, load_run, save_run
from auditor.rundir import RunLock, mark_complete, mark_incomplete
from auditor.runner.checkpoint import Checkpoint
from auditor.runner.compare import compare_runs, read_side
from auditor.runner.pipeline import Prepared, audit, prepare

TREND_RUNS = 10


def audit_to_dir(
    model: str | LoadedModel,
    *,
    data: str | Path,
    out: str | Path,
    weights: str | Path | None = None,
    images: str | Path | None = None,
    config: AuditConfig | None = None,
    pdf: bool = True,
    progress: bool = False,
    history: str | Path | None = None,
    force: bool = False,
    margin: float = 0.05,
) -> AuditRun:
    """Audit, then write summary.json, samples.parquet, run.json, report.html and report.pdf,
    and add the run to ``history`` (a SQLite file; None: no history).

    With a history, the summary gains ``since_previous``: the comparison with the newest
    complete run of the same model name (regressions judged with ``margin``). Unless
    ``force``, a run directory that already holds a complete run of the same model, data,
    settings and auditor version is re-used: only its report is rendered again (the
    returned run has ``reused`` set)."""
    out = Path(out)
    with RunLock(out, purpose="auditor audit"):
        partial = out / ".partial.pt"
        ready = prepare(model, data=data, weights=weights, images=images, config=config)
        book = open_history(history) if history is not None else None
        try:
            earlier = None if force else _unchanged(out, ready)
            if earlier is not None:
                rerender(earlier, out, pdf=pdf)
                earlier.reused = True
                run = earlier
            else:
                run = audit(ready, progress=progress, checkpoint=partial)
                if book is not None:
                    run.summary["since_previous"] = since_previous(run, book, out, margin)
                _write(run, out, pdf)
            if book is not None:
                book.record(run.summary, run.run_info, out, reused=run.reused)
        finally:
            if book is not None:
                book.close()
        Checkpoint(partial, {}).discard()
    return run


def _write(run: AuditRun, out: Path, pdf: bool) -> None:
    """Replace the run directory's files, marked incomplete until run.json is in place."""
    mark_incomplete(out)
    clear_run(out)  # no file of an earlier run may stay beside this one's
    started = time.perf_counter()
    sizes = write_reports(run, out, pdf=pdf)
    run.run_info["timings"]["report_s"] = round(time.perf_counter() - started, 3)
    run.run_info["report_bytes"] = sizes
    save_run(run, out)  # each file once, run.json last
    mark_complete(out)


def _unchanged(out: Path, ready: Prepared) -> AuditRun | None:
    """The complete run in ``out`` when it audited exactly these inputs, else None."""
    try:
        info = json.loads((out / "run.json").read_text())
        if info.get("inputs", {}).get("model_sha256") is None:
            return None
        inputs = info["inputs"]
        same = all(inputs.get(k) == v for k, v in ready.fingerprint.items())
        same = same and inputs.get("parts") == ready.parts  # the same folders named, too
        return load_run(out) if same else None
    except (OSError, ValueError, AttributeError, AuditorError):
        return None  # no run there, an incomplete one or a damaged one: audit afresh


def since_previous(run: AuditRun, book: History, out: Path, margin: float) -> dict[str, Any] | None:
    """The comparison with the newest complete run of the same model name in the history
    (read before this run replaces anything, since it may live in ``out``), and each
    flagged or warned class's trend over the last runs; None without a previous run."""
    name = str(run.summary["model"]["spec"])
    previous = previous_of(book, name)
    if previous is None:
        return None
    folder = Path(previous.run_dir)
    try:
        before = load_run(folder) if folder.resolve() == out.resolve() else read_side(folder)[0]
        compared = compare_runs(before, run, margin=margin)
    except AuditorError as exc:  # moved, damaged or from another version: say so, go on
        return {"previous_run": previous.to_dict(), "error": str(exc)}
    method = compared.comparison.method
    trends = {}
    for c in run.summary["classes"]:
        if c["status"] in ("flag", "warn"):
            points = book.trend(name, c["name"], method, last=TREND_RUNS - 1)
            metrics = c["metrics"].get(method) or {}
            behaviour = c.get("behaviour") or {}
            points.append({"id": "now", "status": c["status"], "accuracy": c.get("accuracy"),
                           "c": metrics.get("chance_corrected"),
                           "swap_gap": behaviour.get("swap_gap")})  # fmt: skip
            trends[c["name"]] = points
    return {"previous_run": previous.to_dict(), **compared.payload, "trends": trends}
