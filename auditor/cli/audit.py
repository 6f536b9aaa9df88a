"""``auditor audit``: the options of the run (model, data, where it goes, the gates) written
here; every setting's option made from its field (:mod:`auditor.cli.options`)."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from auditor.cli.group import EXIT_FLAGGED, EXIT_HISTORY, EXIT_REGRESSION, cli, echo_lines
from auditor.cli.options import overrides, setting_options
from auditor.detect.compare import REGRESSION_MARGIN
from auditor.record import Summary


@cli.command()
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="torchvision name or timm:NAME (with --weights), hf:DIR (a local Hugging Face "
    "folder), TorchScript file, or module:factory.",
)
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict or safetensors file.")
@click.option(
    "--data",
    required=True,
    type=click.Path(),
    help="COCO annotation .json, Pascal VOC root folder, or .csv manifest (image,label + mask "
    "or x0,y0,x1,y1).",
)
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Image root (default: the JSON's or CSV's folder; VOC: JPEGImages).",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Run directory to write."
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="audit.toml")
@click.option(
    "--fail-on-flag", is_flag=True, help=f"Exit with {EXIT_FLAGGED} if a class is flagged."
)
@click.option(
    "--junit-xml",
    type=click.Path(dir_okay=False),
    help="Also write the result as JUnit XML, one test case per class, for CI test views.",
)
@click.option("--no-history", is_flag=True, help="Record nothing, compare with nothing.")
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help=f"Exit with {EXIT_REGRESSION} if a class got worse since the audit's previous run "
    "(the last run of the same --name).",
)
@click.option(
    "--regression-margin",
    type=click.FloatRange(min=0),
    default=REGRESSION_MARGIN,
    show_default=True,
    help="How far the CI of a change in C or the swap gap must clear 0 to be a regression.",
)
@click.option(
    "--force", is_flag=True, help="Audit again even when the inputs equal the run in --out."
)
@click.option("--no-pdf", is_flag=True, help="Skip the PDF report.")
@setting_options
def audit(
    model_spec: str,
    weights: str | None,
    data: str,
    images: str | None,
    out: str,
    config_path: str | None,
    fail_on_flag: bool,
    junit_xml: str | None,
    no_history: bool,
    fail_on_regression: bool,
    regression_margin: float,
    force: bool,
    no_pdf: bool,
    **settings: Any,
) -> None:
    """Audit a model on a labeled dataset with object masks or boxes."""
    from auditor.config import config_from_dict, load_config
    from auditor.history import history_path
    from auditor.report.junit import write_junit
    from auditor.runner.distributed import world_from_env
    from auditor.runner.summary import skip_limit_error
    from auditor.runner.workflow import audit_to_dir

    given = overrides(settings)
    config = load_config(config_path, **given) if config_path else config_from_dict({}, **given)
    history = None if no_history else history_path(None, config.history, os.environ)
    for option, path in (("--junit-xml", junit_xml), ("--history", history)):
        if path is not None:
            _check_beside_run(str(path), Path(out), option)
    world = world_from_env(os.environ)  # torchrun: rank 0 writes the run, the others help
    if not world.leader:
        logging.getLogger().setLevel(logging.ERROR)  # progress and notices from rank 0 alone
        from auditor.runner.workflow import contribute

        contribute(model_spec, weights=weights, data=data, images=images, out=out,
                   config=config, world=world)  # fmt: skip
        return
    started = time.monotonic()
    result = audit_to_dir(
        model_spec, weights=weights, data=data, images=images, out=out, config=config,
        pdf=not no_pdf, progress=True, history=history, force=force, margin=regression_margin,
        world=world,
    )  # fmt: skip
    if result.reused:
        click.echo(
            f"Inputs unchanged since the run in {out} ({result.run_info.get('created')}): "
            "re-used it and rendered its report again; --force audits afresh."
        )
    from auditor.report.terminal import audit_lines

    echo_lines(audit_lines(result.summary, Path(out)))
    if junit_xml:  # named after the run directory: reports/nightly -> nightly
        seconds = time.monotonic() - started
        write_junit(junit_xml, result.summary, suite=Path(out).resolve().name, seconds=seconds)
    incomplete = skip_limit_error(result.summary)
    if incomplete is not None:
        raise incomplete
    _exit_on(result.summary, out, fail_on_flag=fail_on_flag, fail_on_regression=fail_on_regression)


def _exit_on(summary: Summary, out: str, *, fail_on_flag: bool, fail_on_regression: bool) -> None:
    """The exit code after a written run: 5 a history failure, 4 a regression, 3 a flag."""
    if summary.history is not None:
        click.echo(f"Error: {summary.history.error} The run in {out} is complete; the history "
                   "does not list it.", err=True)  # fmt: skip
        sys.exit(EXIT_HISTORY)
    since = summary.since_previous or {}
    if since.get("regressed_classes"):
        click.echo(f"Regressed since run {since['previous_run']['id']}: "
                   f"{', '.join(since['regressed_classes'])}")  # fmt: skip
    if fail_on_regression and since.get("regressed_classes"):
        sys.exit(EXIT_REGRESSION)
    flagged = summary.flagged_classes + summary.flagged_groups + summary.flagged_subgroups
    if fail_on_flag and flagged:
        sys.exit(EXIT_FLAGGED)


def _check_beside_run(path: str, out: Path, option: str) -> None:
    """A file named by ``option`` must not be one the audit writes into ``out``."""
    from auditor.run import AUDIT_RUN
    from auditor.rundir import is_bookkeeping

    target = Path(path).resolve()
    if target.parent == out.resolve() and (
        target.name in AUDIT_RUN.files or is_bookkeeping(target.name)
    ):
        raise click.UsageError(
            f"{option} {path}: the audit writes its own {target.name} into --out {out}; "
            "name another file."
        )
