"""The commands over stored runs: ``report`` (render again), ``history`` (the index) and
``compare`` (what changed between two runs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from auditor.cli.group import EXIT_REGRESSION, cli, echo_lines
from auditor.detect.compare import REGRESSION_MARGIN


def _history_option(help_text: str) -> Any:
    return click.option(
        "--history",
        "history_given",
        type=click.Path(dir_okay=False),
        help=f"{help_text} (default: $AUDITOR_HISTORY, else reports/history.sqlite).",
    )


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--no-pdf", is_flag=True, help="Skip the PDF report.")
def report(run_dir: str, no_pdf: bool) -> None:
    """Re-render report.html and report.pdf from a stored run, recomputing nothing."""
    from auditor.errors import RunDirError
    from auditor.report.render import rerender
    from auditor.run import AUDIT_RUN, load_run
    from auditor.rundir import RunLock, holds

    if not holds(Path(run_dir), AUDIT_RUN):
        raise RunDirError(f"{run_dir}: not an audit run directory (no run.json of auditor's).")
    with RunLock(run_dir, purpose="auditor report"):
        run = load_run(run_dir)
        if not run.evidence:
            click.echo(
                f"Warning: {Path(run_dir) / 'evidence.pt'} is missing; the report shows no "
                "exemplar images or mean maps.",
                err=True,
            )
        rerender(run, Path(run_dir), pdf=not no_pdf)
    click.echo(f"Rendered {Path(run_dir) / 'report.html'}")


@cli.command()
@_history_option("The run history to list")
@click.option("--name", help="Only runs of this audit (its --name, or its run directory).")
@click.option("--model", help="Only runs of this model name, or sha256 prefix.")
@click.option("--class", "class_name", help="Only runs that audited this class.")
@click.option("--last", type=click.IntRange(min=1), help="Only the newest N runs.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.option(
    "--html",
    "html_dir",
    type=click.Path(file_okay=False),
    help="Write a page browsing the history into this folder (index.html): each audit's "
    "runs, reports, comparisons, class statuses and trends (the newest --last runs, "
    "default 30, of each audit, or of --name).",
)
def history(
    history_given: str | None,
    name: str | None,
    model: str | None,
    class_name: str | None,
    last: int | None,
    as_json: bool,
    html_dir: str | None,
) -> None:
    """The recorded audits, newest first."""
    from auditor.history import history_path, open_history, table

    book = open_history(history_path(history_given, None, os.environ), create=False)
    try:
        if html_dir is not None:
            from auditor.runner.browse import RUNS_PER_AUDIT, write_history_page

            if model or class_name:
                raise click.UsageError("--html browses by audit name: give --name, not "
                                       "--model or --class.")  # fmt: skip
            page = write_history_page(book, Path(html_dir), name=name,
                                      last=last or RUNS_PER_AUDIT)  # fmt: skip
            click.echo(f"Wrote {page}")
            return
        runs = book.runs(name=name, model=model, class_name=class_name, last=last)
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        else:
            echo_lines(table(runs))
    finally:
        book.close()


@cli.command()
@click.argument("before")
@click.argument("after")
@click.option(
    "--out",
    default="reports/compare",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for compare.json and compare.html.",
)
@_history_option("Where history ids, latest and previous are looked up")
@click.option("--name", help="Audit name for latest / previous (default: the newest run's).")
@click.option("--model", help="Model name for latest / previous, when no --name is given.")
@click.option(
    "--regression-margin",
    type=click.FloatRange(min=0),
    default=REGRESSION_MARGIN,
    show_default=True,
    help="How far the CI of a change in C or the swap gap must clear 0 to be a regression.",
)
@click.option(
    "--fail-on-regression", is_flag=True, help=f"Exit with {EXIT_REGRESSION} on a regression."
)
def compare(
    before: str,
    after: str,
    out: str,
    history_given: str | None,
    name: str | None,
    model: str | None,
    regression_margin: float,
    fail_on_regression: bool,
) -> None:
    """Compare two runs (directories, history ids, or latest / previous), class by class."""
    from auditor.history import history_path, open_history
    from auditor.report.terminal import compare_lines
    from auditor.runner.compare import compare_to_dir

    needs_history = not (Path(before).is_dir() and Path(after).is_dir())
    path = history_path(history_given, None, os.environ)
    book = open_history(path, create=False) if needs_history else None
    try:
        compared = compare_to_dir(
            before,
            after,
            out=Path(out),
            history=book,
            model=model,
            name=name,
            margin=regression_margin,
        )
    finally:
        if book is not None:
            book.close()
    echo_lines(compare_lines(compared.payload, Path(out)))
    if fail_on_regression and compared.payload["regressed_classes"]:
        sys.exit(EXIT_REGRESSION)
