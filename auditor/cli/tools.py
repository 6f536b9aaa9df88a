"""The commands beside an audit: ``demo``, ``probe-data`` (model-free) and ``init-config``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from auditor.cli.group import EXIT_FLAGGED, cli, echo_lines


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
    from auditor.report.terminal import probe_lines
    from auditor.runner.probe import ProbeModel, probe_to_dir

    if weights and not model_spec:
        raise click.UsageError("--weights needs --model.")
    config = ProbeConfig(image_size=image_size, folds=folds, seed=seed)
    model = ProbeModel(model_spec, weights, normalize, device) if model_spec else None
    summary = probe_to_dir(data, out=out, images=images, config=config, model=model, pdf=not no_pdf)
    echo_lines(probe_lines(summary, Path(out)))
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
