"""The one path from a model and a dataset to a finished run directory, shared by
``auditor audit`` and ``auditor demo``: audit -> store -> report.

The run directory is locked for the whole job and checked to be writable before the model
is loaded, so a bad ``--out`` costs nothing and two audits never interleave their files.
"""

from __future__ import annotations

import time
from pathlib import Path

from auditor.config import AuditConfig
from auditor.models import LoadedModel
from auditor.report.render import write_reports
from auditor.run import AuditRun, clear_run, save_run
from auditor.rundir import RunLock
from auditor.runner.pipeline import audit


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
) -> AuditRun:
    """Audit, then write summary.json, samples.parquet, run.json, report.html and report.pdf."""
    out = Path(out)
    with RunLock(out, purpose="auditor audit"):
        partial = out / ".partial.pt"
        run = audit(model, data=data, weights=weights, images=images, config=config,
                    progress=progress, checkpoint=partial)  # fmt: skip
        clear_run(out)  # no file of an earlier run may stay beside this one's
        started = time.perf_counter()
        sizes = write_reports(run, out, pdf=pdf)
        run.run_info["timings"]["report_s"] = round(time.perf_counter() - started, 3)
        run.run_info["report_bytes"] = sizes
        save_run(run, out)  # each file once, run.json last
        partial.unlink(missing_ok=True)
    return run
