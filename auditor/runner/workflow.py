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
import logging
import time
from pathlib import Path
from typing import Any

import torch

from auditor.config import AuditConfig
from auditor.errors import AuditorError
from auditor.history import History, open_history, previous_of
from auditor.models import LoadedModel
from auditor.report.render import rerender, write_reports
from auditor.run import AuditRun, clear_run, load_run, save_run
from auditor.rundir import RunLock, mark_complete, mark_incomplete
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
    margin: float = 0.05,
    world: World = SINGLE,
) -> AuditRun:
    """Audit, then write summary.json, samples.parquet, run.json, report.html and report.pdf,
    and add the run to ``history`` (a SQLite file; None: no history).

    With a history, the summary gains ``since_previous``: the comparison with the newest
    complete run of the same model name (regressions judged with ``margin``). Unless
    ``force``, a run directory that already holds a complete run of the same model, data,
    settings and auditor version is re-used: only its report is rendered again (the
    returned run has ``reused`` set).

    Under torchrun this is rank 0's part (``world``): it alone locks and writes ``out`` and
    the history, runs preflight for all and judges what every rank sends, while each other
    rank runs :func:`contribute`."""
    if not world.leader:
        raise ValueError(f"rank {world.rank} runs contribute(); rank 0 writes the run")
    out = Path(out)
    with RunLock(out, purpose="auditor audit"):
        partial = checkpoint_path(out / ".partial.pt", world)
        ready = prepare(model, data=data, weights=weights, images=images, config=config,
                        world=world)  # fmt: skip
        book = open_history(history) if history is not None else None
        try:
            earlier = None if force else _unchanged(out, ready)
            stale = other_checkpoints(out / ".partial.pt", world) if earlier is None else []
            for path in stale:
                log.warning("%s: saved by an audit with another number of processes, so not "
                            "resumed by this one; removed once it is complete.", path)  # fmt: skip

            def finish(parts: list[Streamed | None]) -> AuditRun:
                if earlier is not None:
                    rerender(earlier, out, pdf=pdf)
                    earlier.reused = True
                    run = earlier
                else:
                    run = assemble(ready, merged([p for p in parts if p is not None]))
                    if book is not None:
                        run.summary["since_previous"] = since_previous(run, book, out, margin)
                    _write(run, out, pdf)
                if book is not None:
                    book.record(run.summary, run.run_info, out, reused=run.reused)
                return run

            with process_group(world, ready.device):
                checked = from_leader(world, lambda: _checked(ready, earlier is None))
                run = sharded(world, lambda: _shard(ready, checked, partial, world, progress),
                              finish)  # fmt: skip
        finally:
            if book is not None:
                book.close()
        for path in [partial, *stale]:
            Checkpoint(path, {}).discard()
    assert run is not None  # rank 0's is the whole run
    return run


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
