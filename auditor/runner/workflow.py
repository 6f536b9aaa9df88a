"""The one path from a model and a dataset to a finished run directory, shared by
``auditor audit`` and ``auditor demo``: audit -> compare with the previous run -> store ->
report -> history.

The run directory is locked for the whole job and checked to be writable before the model
is loaded, so a bad ``--out`` costs nothing and two audits never interleave their files.
While its final files are replaced it carries ``INCOMPLETE`` (:mod:`auditor.rundir`): a
process killed at any moment leaves the earlier complete run, or a marked directory beside
a resumable checkpoint. The history row is added once the directory is complete, and a
history that fails (locked, read-only, damaged) never costs the run: the failure is written
into the run's summary and report instead (:class:`Ledger`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from auditor.config import AuditConfig
from auditor.detect.compare import REGRESSION_MARGIN
from auditor.errors import AuditorError, HistoryError
from auditor.history import History, audit_name, open_history, previous_of
from auditor.models import LoadedModel
from auditor.record.summary import HistoryNote
from auditor.report.render import render_reports, rerender
from auditor.run import AUDIT_RUN, AuditRun, load_run, save_run, update_run_info
from auditor.rundir import RunLock, claim
from auditor.runner.checkpoint import Checkpoint
from auditor.runner.compare import compare_runs, read_side
from auditor.runner.distributed import (
    SINGLE,
    World,
    checkpoint_path,
    from_leader,
    other_checkpoints,
    process_group,
    sharded,
)
from auditor.runner.pipeline import (
    Checked,
    Prepared,
    Streamed,
    assemble,
    merged,
    preflight,
    prepare,
    stream,
)

log = logging.getLogger(__name__)

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
    margin: float = REGRESSION_MARGIN,
    world: World = SINGLE,
) -> AuditRun:
    """Audit, then write summary.json, samples.parquet, run.json, report.html and report.pdf,
    and add the run to ``history`` (a SQLite file; None: no history).

    ``out`` must be new, empty, or hold an earlier audit run (:func:`auditor.rundir.claim`):
    a folder of other files is refused before anything is written into it.

    The audit's name (``config.name``, else ``out`` resolved) goes into ``run.json``. With
    a history, the summary gains ``since_previous``: the comparison with the newest
    complete run of the same name (regressions judged with ``margin``). The history
    never costs the run: when it cannot be opened, read or written, the run directory is
    written all the same, and ``summary["history"]["error"]`` (also in the report) says
    why. Unless ``force``, a run directory that already holds a complete run of the same
    model, data, settings and auditor version is re-used: only its report is rendered again
    (the returned run has ``reused`` set).

    Under torchrun this is rank 0's part (``world``): it alone locks and writes ``out`` and
    the history, runs preflight for all and judges what every rank sends, while each other
    rank runs :func:`contribute`."""
    if not world.leader:
        raise ValueError(f"rank {world.rank} runs contribute(); rank 0 writes the run")
    out = Path(out)
    claim(out, AUDIT_RUN)
    with RunLock(out, purpose="auditor audit"):
        partial = checkpoint_path(out / ".partial.pt", world)
        ready = prepare(model, data=data, weights=weights, images=images, config=config,
                        world=world)  # fmt: skip
        ledger = Ledger.open(history)
        try:
            earlier = None if force else _unchanged(out, ready)
            stale = other_checkpoints(out / ".partial.pt", world) if earlier is None else []
            for path in stale:
                log.warning("%s: saved by an audit with another number of processes, so not "
                            "resumed by this one; removed once it is complete.", path)  # fmt: skip

            name = audit_name(ready.config.name, out)

            def finish(parts: list[Streamed | None]) -> AuditRun:
                if earlier is not None:
                    if earlier.run_info.get("name") != name:  # re-used under another name
                        earlier.run_info["name"] = name
                        update_run_info(out, name=name)
                    rerender(earlier, out, pdf=pdf)
                    earlier.reused = True
                    run = earlier
                else:
                    run = assemble(ready, merged([p for p in parts if p is not None]))
                    run.run_info["name"] = name
                    ledger.compare(run, out, margin)
                    _write(run, out, pdf)
                ledger.record(run, out, pdf=pdf)
                return run

            with process_group(world, ready.device):
                checked = from_leader(world, lambda: _checked(ready, earlier is None))
                run = sharded(world, lambda: _shard(ready, checked, partial, world, progress),
                              finish)  # fmt: skip
        finally:
            ledger.close()
        for path in [partial, *stale]:
            Checkpoint(path, {}).discard()
    assert run is not None  # rank 0's is the whole run
    return run


@dataclass
class Ledger:
    """The run history as an audit uses it: open, compare with the previous run, record
    this one. A failure at any step is kept as ``error`` (one line) instead of raised, and
    the steps after it are skipped: the run directory is the product, the history its
    index."""

    path: Path | None
    book: History | None = None
    error: str | None = None

    @classmethod
    def open(cls, path: str | Path | None) -> Ledger:
        if path is None:
            return cls(None)
        ledger = cls(Path(path))
        ledger.book = ledger._guarded(lambda: open_history(path))
        return ledger

    def compare(self, run: AuditRun, out: Path, margin: float) -> None:
        """Add ``since_previous`` (and, on a failure, ``history``) to the run's summary."""
        book = self.book
        if book is not None:
            found = self._guarded(lambda: since_previous(run, book, out, margin))
            if self.error is None:
                run.summary = run.summary.replace(since_previous=found)
        self._note(run)

    def record(self, run: AuditRun, out: Path, *, pdf: bool) -> None:
        """Add the written run to the history. When that fails, the run directory's
        summary and report are written again with the failure in them."""
        book = self.book
        if book is None or self.error is not None:
            return
        self._guarded(lambda: book.record(run.summary, run.run_info, out, reused=run.reused))
        if self.error is not None:
            self._note(run)
            _write(run, out, pdf)

    def close(self) -> None:
        if self.book is not None:
            self._guarded(self.book.close)

    def _note(self, run: AuditRun) -> None:
        if self.error is not None:
            note = HistoryNote(path=str(self.path), error=self.error)
            run.summary = run.summary.replace(history=note)

    def _guarded(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except HistoryError as exc:
            self.error = self.error or str(exc)
            return None


def contribute(
    model: str | LoadedModel,
    *,
    data: str | Path,
    out: str | Path,
    weights: str | Path | None = None,
    images: str | Path | None = None,
    config: AuditConfig | None = None,
    world: World,
) -> None:
    """A torchrun rank other than 0: audit this rank's shard and send it to rank 0, which
    judges and writes the run (:func:`audit_to_dir`). Of ``out`` it uses only its own
    resume checkpoint; it fails when any rank fails."""
    partial = checkpoint_path(Path(out) / ".partial.pt", world)
    ready = prepare(model, data=data, weights=weights, images=images, config=config, world=world)
    with process_group(world, ready.device):
        checked: Checked | None = from_leader(world)
        sharded(world, lambda: _shard(ready, checked, partial, world, False), lambda _: None)
    Checkpoint(partial, {}).discard()


def _checked(ready: Prepared, needed: bool) -> Checked | None:
    """Rank 0's preflight, on the CPU to be sent to the other ranks; None when the run in
    ``--out`` is re-used and nothing is audited."""
    return preflight(ready).on(torch.device("cpu")) if needed else None


def _shard(
    ready: Prepared, checked: Checked | None, partial: Path | None, world: World, progress: bool
) -> Streamed | None:
    """This rank's part: its shard streamed, or nothing when rank 0 re-uses the run."""
    if checked is None:
        return None
    return stream(ready, checked.on(ready.device), progress=progress, checkpoint=partial,
                  world=world)  # fmt: skip


def _write(run: AuditRun, out: Path, pdf: bool) -> None:
    """Render the reports, then replace the run directory's files with them and the run's
    (:func:`~auditor.run.save_run`: marked incomplete until run.json is in place)."""
    started = time.perf_counter()
    reports = render_reports(run, out, pdf=pdf)
    run.run_info["timings"]["report_s"] = round(time.perf_counter() - started, 3)
    run.run_info["report_bytes"] = {name: len(payload) for name, payload in reports.items()}
    save_run(run, out, reports=reports)


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
    """The comparison with the newest complete run of the same audit name in the history
    (read before this run replaces anything, since it may live in ``out``), and each
    flagged or warned class's trend over the last runs; None without a previous run."""
    name = run.run_info.get("name") or audit_name(None, out)
    previous = previous_of(book, name)
    if previous is None:
        return None
    folder = Path(previous.run_dir)
    try:
        before = load_run(folder) if folder.resolve() == out.resolve() else read_side(folder)[0]
        compared = compare_runs(before, run, margin=margin)
    except HistoryError:
        raise
    except AuditorError as exc:  # moved, damaged or from another version: say so, go on
        return {"previous_run": previous.to_dict(), "error": str(exc)}
    method = compared.comparison.method
    trends = {}
    for c in run.summary.classes:
        if c.status in ("flag", "warn"):
            points = book.trend(name, c.name, method, last=TREND_RUNS - 1)
            gap = None if c.behaviour is None else c.behaviour.swap_gap
            points.append({"id": "now", "status": c.status, "accuracy": c.accuracy,
                           "c": c.metric(method), "swap_gap": gap})  # fmt: skip
            trends[c.name] = points
    return {"previous_run": previous.to_dict(), **compared.payload, "trends": trends}
