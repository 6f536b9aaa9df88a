"""``auditor history --html DIR``: a static page over the run history. For every audit (a
name) it lists the newest runs, links each to its report and to the comparison with the
audit's run before it (written into ``DIR/compare/A-B/`` once and kept: runs do not change
under their id), and charts each class's status and numbers over the runs.

The page links to run directories by relative paths, so ``DIR`` and the runs can move
together; a run whose directory is gone is listed without a link."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from auditor.errors import AuditorError
from auditor.history import History, HistoryRun
from auditor.report.history_page import AuditRows, RunRow, render_history_page
from auditor.rundir import atomic_write
from auditor.runner.compare import compare_to_dir

PAGE = "index.html"
RUNS_PER_AUDIT = 30


def write_history_page(
    book: History, out: Path, *, name: str | None = None, last: int = RUNS_PER_AUDIT
) -> Path:
    """Write ``out/index.html`` (and the comparison pages it links to); returns the page."""
    out.mkdir(parents=True, exist_ok=True)
    names = [name] if name else book.names()
    audits = [_audit(book, n, out, last) for n in names]
    page = render_history_page(
        [a for a in audits if a.runs], source=str(book.path.resolve()), only=name,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    atomic_write(out / PAGE, page.encode("utf-8"))
    return out / PAGE


def _audit(book: History, name: str, out: Path, last: int) -> AuditRows:
    runs = book.runs(name=name, last=last)
    rows = []
    for i, run in enumerate(runs):
        before = next((r for r in runs[i + 1 :] if r.present), None)
        link, error = _comparison(run, before, out)
        report = Path(run.run_dir) / "report.html"
        rows.append(RunRow(
            id=run.id, created=run.created, model=run.model_name, verdict=run.verdict,
            flagged=run.flagged_classes, compare=link, compare_error=error,
            report=_link(report, out) if run.present and report.is_file() else None,
        ))  # fmt: skip
    statuses: dict[str, dict[int, str]] = {}
    for run in runs:
        for row in book.class_results(run.id):
            statuses.setdefault(row["class"], {})[run.id] = row["status"]
    method = _method(book, runs)
    trends = {}
    if method is not None:
        for c in statuses:
            trends[c] = book.trend(name, c, method, last=last)
    return AuditRows(name, rows, method, statuses, trends)


def _comparison(
    run: HistoryRun, before: HistoryRun | None, out: Path
) -> tuple[str | None, str | None]:
    """The link to the comparison of ``run`` with ``before`` (written when missing), or why
    there is none."""
    if before is None or not run.present:
        return None, None
    folder = out / "compare" / f"{before.id}-{run.id}"
    if not (folder / "compare.html").is_file():
        try:
            compare_to_dir(before.run_dir, run.run_dir, out=folder, history=None)
        except AuditorError as exc:
            return None, f"not compared: {exc}"
    return _link(folder / "compare.html", out), None


def _method(book: History, runs: list[HistoryRun]) -> str | None:
    """The method the trends chart: the newest present run's primary method, else the first
    method the newest run recorded."""
    for run in runs:
        if run.present:
            try:
                summary = json.loads((Path(run.run_dir) / "summary.json").read_text())
                return str(summary["primary_method"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    for run in runs:
        methods = sorted({r["method"] for r in book.class_results(run.id)})
        if methods:
            return methods[0]
    return None


def _link(target: Path, page_dir: Path) -> str:
    """``target`` relative to the page's folder, as a URL path."""
    return quote(Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix())
