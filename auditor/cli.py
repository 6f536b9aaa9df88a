"""Command line: ``auditor audit | report | history | compare | probe-data | demo | ...``.
Thin: parse, call the library, map errors to exit codes: 0 a complete audit, 1 error
(including an audit that scored no image or skipped more than --max-skipped), 2 usage error,
3 flagged with --fail-on-flag, 4 a regression with --fail-on-regression, 5 the run directory
is complete but the run history could not be read or written."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from auditor.errors import AuditorError, ConfigError, RunDirError

EXIT_FLAGGED = 3
EXIT_REGRESSION = 4
EXIT_HISTORY = 5
DEFAULT_HISTORY = "reports/history.sqlite"


class _Group(click.Group):
    """Turns library errors into one line on stderr and exit code 1 (2 for bad settings)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except AuditorError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo(
                "Interrupted. Progress is kept: run the same command again to resume.", err=True
            )
            ctx.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="auditor")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """Audit image classifiers for shortcut learning."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    for noisy in ("weasyprint", "fontTools"):  # CSS and font-subsetting chatter
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


@cli.command()
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="torchvision name (with --weights), TorchScript file, or module:factory.",
)
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict file.")
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
@click.option("--split", help="VOC image set: ImageSets/Main/<split>.txt (default: all XML).")
@click.option(
    "--label-policy",
    type=click.Choice(["single", "all"]),
    help="Images with several categories: audit the largest (single, default) or each (all).",
)
@click.option(
    "--class-map",
    type=click.Path(dir_okay=False, exists=True),
    help="JSON {category: index} or CSV category,index: dataset categories -> model outputs.",
)
@click.option(
    "--keep-aspect",
    is_flag=True,
    default=None,
    help="Letterbox: resize the long side, pad the rest (padding is ignored by the metrics).",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Run directory to write."
)
@click.option("--methods", help="Comma-separated, e.g. gradcam,saliency.")
@click.option("--target-layer", help="Dotted module name for CAM methods (default: automatic).")
@click.option("--image-size", type=int, help="Input size in pixels (default 224).")
@click.option("--normalize", help="imagenet | none | M,M,M/S,S,S")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", type=int)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    help="Autocast of the forward passes (default fp32); maps and scores stay float32.",
)
@click.option(
    "--channels-last",
    is_flag=True,
    help="Model and batches in channels-last memory layout (faster convolutions on GPUs).",
)
@click.option("--workers", type=int, help="DataLoader worker processes (default 0: decode inline).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="audit.toml")
@click.option(
    "--fail-on-flag", is_flag=True, help=f"Exit with {EXIT_FLAGGED} if a class is flagged."
)
@click.option(
    "--junit-xml",
    type=click.Path(dir_okay=False),
    help="Also write the result as JUnit XML, one test case per class, for CI test views.",
)
@click.option(
    "--group-by",
    multiple=True,
    help="Audit each group of images sharing this attribute too (repeatable).",
)
@click.option(
    "--attributes",
    "attributes_file",
    type=click.Path(dir_okay=False, exists=True),
    help="CSV image,attribute,value of per-image attributes (image: id or file name).",
)
@click.option(
    "--max-skipped",
    type=float,
    help="Largest share of images that may be skipped (0-1, default 0.5); above it the run "
    "is written but the exit code is 1.",
)
@click.option(
    "--history",
    "history_path",
    type=click.Path(dir_okay=False),
    help="Run history (SQLite) to record the run in and compare with (default: the "
    "config's `history`, else $AUDITOR_HISTORY, else reports/history.sqlite).",
)
@click.option("--no-history", is_flag=True, help="Record nothing, compare with nothing.")
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help=f"Exit with {EXIT_REGRESSION} if a class got worse since the model's previous run.",
)
@click.option(
    "--regression-margin",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="How far the CI of a change in C or the swap gap must clear 0 to be a regression.",
)
@click.option(
    "--force", is_flag=True, help="Audit again even when the inputs equal the run in --out."
)
@click.option("--no-pdf", is_flag=True, help="Skip the PDF report.")
def audit(
    model_spec: str,
    weights: str | None,
    data: str,
    images: str | None,
    split: str | None,
    label_policy: str | None,
    class_map: str | None,
    keep_aspect: bool | None,
    out: str,
    methods: str | None,
    target_layer: str | None,
    image_size: int | None,
    normalize: str | None,
    device: str | None,
    batch_size: int | None,
    precision: str | None,
    channels_last: bool,
    workers: int | None,
    config_path: str | None,
    fail_on_flag: bool,
    junit_xml: str | None,
    group_by: tuple[str, ...],
    attributes_file: str | None,
    max_skipped: float | None,
    history_path: str | None,
    no_history: bool,
    fail_on_regression: bool,
    regression_margin: float,
    force: bool,
    no_pdf: bool,
) -> None:
    """Audit a model on a labeled dataset with object masks or boxes."""
    from auditor.config import config_from_dict, load_config
    from auditor.report.junit import write_junit
    from auditor.runner.distributed import world_from_env
    from auditor.runner.summary import skip_limit_error
    from auditor.runner.workflow import audit_to_dir, contribute

    overrides: dict[str, Any] = {
        "methods": tuple(methods.split(",")) if methods else None, "target_layer": target_layer,
        "image_size": image_size, "normalize": normalize, "device": device,
        "batch_size": batch_size, "precision": precision, "split": split,
        "channels_last": channels_last or None,
        "label_policy": label_policy, "class_map": class_map,
        "keep_aspect": keep_aspect or None, "num_workers": workers,
        "max_skipped": max_skipped, "group_by": group_by or None,
        "attributes": attributes_file,
    }  # fmt: skip
    config = (
        load_config(config_path, **overrides) if config_path else config_from_dict({}, **overrides)
    )
    history = None if no_history else _history_path(history_path, config.history)
    for option, path in (("--junit-xml", junit_xml), ("--history", history)):
        if path is not None:
            _check_beside_run(str(path), Path(out), option)
    world = world_from_env(os.environ)  # torchrun: rank 0 writes the run, the others help
    if not world.leader:
        logging.getLogger().setLevel(logging.ERROR)  # progress and notices from rank 0 alone
        contribute(model_spec, weights=weights, data=data, images=images, out=out,
                   config=config, world=world)  # fmt: skip
        return
    started = time.monotonic()
    result = audit_to_dir(
        model_spec,
        weights=weights,
        data=data,
        images=images,
        out=out,
        config=config,
        pdf=not no_pdf,
        progress=True,
        history=history,
        force=force,
        margin=regression_margin,
        world=world,
    )
    if result.reused:
        click.echo(
            f"Inputs unchanged since the run in {out} ({result.run_info.get('created')}): "
            "re-used it and rendered its report again; --force audits afresh."
        )
    _print_summary(result.summary, Path(out))
    if junit_xml:  # named after the run directory: reports/nightly -> nightly
        seconds = time.monotonic() - started
        write_junit(junit_xml, result.summary, suite=Path(out).resolve().name, seconds=seconds)
    incomplete = skip_limit_error(result.summary)
    if incomplete is not None:
        raise incomplete
    unrecorded = (result.summary.get("history") or {}).get("error")
    if unrecorded:
        click.echo(f"Error: {unrecorded} The run in {out} is complete; the history does not "
                   "list it.", err=True)  # fmt: skip
        sys.exit(EXIT_HISTORY)
    flagged = [
        result.summary.get(k) for k in ("flagged_classes", "flagged_groups", "flagged_subgroups")
    ]
    since = result.summary.get("since_previous") or {}
    if since.get("regressed_classes"):
        click.echo(f"Regressed since run {since['previous_run']['id']}: "
                   f"{', '.join(since['regressed_classes'])}")  # fmt: skip
    if fail_on_regression and since.get("regressed_classes"):
        sys.exit(EXIT_REGRESSION)
    if fail_on_flag and any(flagged):
        sys.exit(EXIT_FLAGGED)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--no-pdf", is_flag=True, help="Skip the PDF report.")
def report(run_dir: str, no_pdf: bool) -> None:
    """Re-render report.html and report.pdf from a stored run, recomputing nothing."""
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


def _history_option(help_text: str) -> Any:
    """--history for the commands that read the history ($AUDITOR_HISTORY, else the default)."""
    return click.option(
        "--history",
        "history_path",
        envvar="AUDITOR_HISTORY",
        default=DEFAULT_HISTORY,
        show_default=True,
        type=click.Path(dir_okay=False),
        help=help_text,
    )


@cli.command()
@_history_option("The run history to list.")
@click.option("--model", help="Only runs of this model name, or sha256 prefix.")
@click.option("--class", "class_name", help="Only runs that audited this class.")
@click.option("--last", type=click.IntRange(min=1), help="Only the newest N runs.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def history(
    history_path: str, model: str | None, class_name: str | None, last: int | None, as_json: bool
) -> None:
    """The recorded audits, newest first."""
    import json

    from auditor.history import open_history, table

    book = open_history(history_path, create=False)
    try:
        runs = book.runs(model=model, class_name=class_name, last=last)
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        else:
            click.echo("\n".join(table(runs)))
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
@_history_option("Where history ids, latest and previous are looked up.")
@click.option("--model", help="Model name for latest / previous (default: the newest run's).")
@click.option("--regression-margin", type=click.FloatRange(min=0), default=0.05, show_default=True)
@click.option(
    "--fail-on-regression", is_flag=True, help=f"Exit with {EXIT_REGRESSION} on a regression."
)
def compare(
    before: str,
    after: str,
    out: str,
    history_path: str,
    model: str | None,
    regression_margin: float,
    fail_on_regression: bool,
) -> None:
    """Compare two runs (directories, history ids, or latest / previous), class by class."""
    from auditor.history import open_history
    from auditor.runner.compare import compare_to_dir

    needs_history = not (Path(before).is_dir() and Path(after).is_dir())
    book = open_history(history_path, create=False) if needs_history else None
    try:
        compared = compare_to_dir(
            before, after, out=Path(out), history=book, model=model, margin=regression_margin
        )
    finally:
        if book is not None:
            book.close()
    payload = compared.payload
    pairing = "paired" if payload["paired"] else "unpaired"
    click.echo(f"{payload['before']['run_dir']} -> {payload['after']['run_dir']} "
               f"({pairing}, {payload['method']})")  # fmt: skip
    for c in payload["classes"]:
        mark = "  REGRESSED" if c["regressed"] else ""
        click.echo(f"  {_label(c['name']):<16} {c['status_before']:>17} -> "
                   f"{c['status_after']:<17}{mark}")  # fmt: skip
    for key, words in (("only_before", "only before"), ("only_after", "only after")):
        if payload[key]:
            click.echo(f"  {words}: {', '.join(payload[key])}")
    click.echo(f"Comparison: {Path(out) / 'compare.html'}")
    if fail_on_regression and payload["regressed_classes"]:
        sys.exit(EXIT_REGRESSION)


@cli.command()
@click.option("--out", default="reports/demo", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--data-root", default="datasets", show_default=True, type=click.Path(file_okay=False)
)
def demo(out: str, data_root: str) -> None:
    """Train a shortcut and a control model on planted-shortcut data, and audit both."""
    from auditor.lab.demo import run_demo

    run_demo(Path(out), Path(data_root), echo=click.echo)


@cli.command("probe-data")
@click.option(
    "--data",
    required=True,
    type=click.Path(),
    help="COCO annotation .json, Pascal VOC root folder, or .csv manifest.",
)
@click.option("--images", type=click.Path(file_okay=False), help="Image root (as for audit).")
@click.option(
    "--out",
    default="reports/probe",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for data_summary.json, data_report.html and data_report.pdf.",
)
@click.option(
    "--image-size",
    default=64,
    show_default=True,
    type=click.IntRange(min=8),
    help="Side, in pixels, the images are probed at.",
)
@click.option(
    "--folds",
    default=5,
    show_default=True,
    type=click.IntRange(min=2),
    help="Stratified cross-validation folds.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the folds.")
@click.option(
    "--model",
    "model_spec",
    help="Describe the views by this model's penultimate features instead of the fixed "
    "ones (a stronger probe; same specs as audit).",
)
@click.option("--weights", type=click.Path(dir_okay=False), help="state_dict for --model.")
@click.option("--normalize", default="imagenet", show_default=True, help="As for audit.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option(
    "--fail-on-flag", is_flag=True, help=f"Exit with {EXIT_FLAGGED} if a class is flagged."
)
@click.option("--no-pdf", is_flag=True, help="Skip the PDF report.")
def probe_data(
    data: str,
    images: str | None,
    out: str,
    image_size: int,
    folds: int,
    seed: int,
    model_spec: str | None,
    weights: str | None,
    normalize: str,
    device: str,
    fail_on_flag: bool,
    no_pdf: bool,
) -> None:
    """Can the label be predicted from the background alone? Model-free by default."""
    from auditor.detect.probe import ProbeConfig
    from auditor.runner.probe import ProbeModel, probe_to_dir

    if weights and not model_spec:
        raise click.UsageError("--weights needs --model.")
    config = ProbeConfig(image_size=image_size, folds=folds, seed=seed)
    model = ProbeModel(model_spec, weights, normalize, device) if model_spec else None
    summary = probe_to_dir(data, out=out, images=images, config=config, model=model, pdf=not no_pdf)
    _print_probe(summary, Path(out))
    if fail_on_flag and summary["flagged_classes"]:
        sys.exit(EXIT_FLAGGED)


@cli.command("init-config")
@click.argument("path", default="audit.toml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def init_config(path: str, force: bool) -> None:
    """Write a commented audit.toml with every setting at its default, for --config."""
    from auditor.config import write_config

    write_config(path, force=force)
    click.echo(f"Wrote {path}")


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


def _history_path(flag: str | None, configured: str | None) -> Path:
    """--history, else the config's ``history``, else $AUDITOR_HISTORY, else the default."""
    return Path(flag or configured or os.environ.get("AUDITOR_HISTORY") or DEFAULT_HISTORY)


def _print_probe(summary: dict, out: Path) -> None:
    flagged = _names(summary["flagged_classes"])
    click.echo(f"Data probe: {summary['verdict'].upper()}  (flagged: {flagged})")
    dataset = summary["dataset"]
    reasons = ", ".join(f"{k} {v}" for k, v in dataset["skipped_by_reason"].items())
    click.echo(
        f"Images: {dataset['n_used']} used, {dataset['n_skipped']} skipped"
        + (f" ({reasons})" if reasons else "")
    )
    click.echo(f"  {'class':<16} {'n':<6} {'status':<18} background-only  chance  object-only")
    for c in summary["classes"]:
        values = [c["background_only_accuracy"], c["chance"], c["object_only_accuracy"]]
        bg, chance, obj = ("n/a" if v is None else f"{v:.2f}" for v in values)
        click.echo(f"  {_label(c['name']):<16} {c['n']:<6} {c['status']:<18} {bg:<16} "
                   f"{chance:<7} {obj}")  # fmt: skip
    click.echo(f"Report: {out / 'data_report.html'}")


def _print_summary(summary: dict, out: Path) -> None:
    flagged = _names(summary["flagged_classes"])
    click.echo(f"Verdict: {summary['verdict'].upper()}  (flagged: {flagged})")
    dataset = summary["dataset"]
    reasons = ", ".join(f"{k} {v}" for k, v in dataset["skipped_by_reason"].items())
    unscored = dataset.get("n_unscored") or 0
    click.echo(
        f"Images: {dataset['n_scored']} scored, {dataset['n_skipped']} skipped"
        + (f" ({reasons})" if reasons else "")
        + (f", {unscored} without a score (every map zero)" if unscored else "")
    )
    for c in summary["classes"]:
        metric: dict = c["metrics"].get(summary["primary_method"], {})
        cc = metric.get("chance_corrected")
        cc_text = "n/a" if cc is None else f"{cc:+.2f}"
        click.echo(
            f"  {_label(c['name']):<16} n={c['n']:<5} status={c['status']:<17} "
            f"chance-corrected={cc_text}"
        )
    for group in summary.get("groups", []):
        worst = group["worst_group"]
        where = "n/a" if worst is None else (
            f"{worst['class']} where {group['attribute']} = {worst['value']} "
            f"({100 * (worst['accuracy'] or 0):.1f}%, n={worst['n']})"
        )  # fmt: skip
        click.echo(f"  group {group['attribute']}: worst {where}")
    if summary.get("flagged_groups"):
        click.echo(f"Flagged groups: {'; '.join(summary['flagged_groups'])}")
    if summary.get("flagged_subgroups"):
        click.echo(f"Flagged subgroups: {'; '.join(summary['flagged_subgroups'])}")
    click.echo(f"Report: {out / 'report.html'}")


def _names(names: list[str], *, most: int = 10) -> str:
    """Up to ``most`` names, then how many more; "none" for none."""
    shown = ", ".join(_label(n) for n in names[:most]) or "none"
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _label(name: str) -> str:
    """A class name for the terminal: at most 40 characters (names come from the data)."""
    return name if len(name) <= 40 else name[:39] + "…"


def main() -> None:
    # A scheduler or CI runner stops a job with SIGTERM: keep its progress as Ctrl-C does.
    signal.signal(signal.SIGTERM, _terminated)
    cli(prog_name="auditor")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
