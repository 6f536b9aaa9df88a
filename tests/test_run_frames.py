"""A run in a notebook: ``run.classes`` is the summary's class table as a DataFrame, and
``run.plot_class`` draws a class with the report's own pictures."""

import math
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from auditor.config import AuditConfig
from auditor.errors import RunDirError
from auditor.models import load_model
from auditor.record.summary import pair
from auditor.report.figures import heat_pixels, overlay_pixels
from auditor.run import load_run
from auditor.runner.pipeline import audit


@pytest.fixture(scope="module")
def run(coco_dataset, resnet_weights):
    config = AuditConfig(image_size=32, batch_size=16)
    return audit(load_model("resnet18", resnet_weights), data=coco_dataset, config=config)


def same(value, stored):
    """A frame's value against the record's: None is stored where the frame holds NaN."""
    return math.isnan(value) if stored is None else value == pytest.approx(stored)


def test_the_class_frame_is_the_summary_one_row_per_class(run):
    frame, methods = run.classes, run.summary.methods
    assert list(frame.columns) == [
        "name", "index", "status", "n", "accuracy",
        *[f"C_{m}{end}" for m in methods for end in ("", "_low", "_high")],
        "swap_gap", "swap_gap_low", "swap_gap_high", "background_only",
        "findings", "reasons", "notes",
    ]  # fmt: skip
    assert len(frame) == len(run.summary.classes) == 4
    for row, c in zip(frame.itertuples(index=False), run.summary.classes, strict=True):
        values = row._asdict()
        assert (row.name, row.index, row.status, row.n) == (c.name, c.index, c.status, c.n)
        assert same(row.accuracy, c.accuracy)
        for m in methods:
            low, high = pair(c.metrics[m].ci95)
            assert same(values[f"C_{m}"], c.metric(m))
            assert same(values[f"C_{m}_low"], low) and same(values[f"C_{m}_high"], high)
        b = c.behaviour
        assert b is not None and same(row.swap_gap, b.swap_gap)
        assert same(row.swap_gap_low, pair(b.swap_gap_ci95)[0])
        assert same(row.background_only, b.background_only_accuracy)
        assert row.findings == [f.kind for f in c.findings]
        assert (row.reasons, row.notes) == (c.reasons, c.noted)
    assert frame["accuracy"].dtype == float and frame["n"].dtype == int


def test_plot_class_draws_the_reports_pictures_of_the_class(run):
    name, methods = run.summary.names[0], run.summary.methods
    evidence = run.evidence["classes"][name]
    exemplars = evidence["exemplars"][:2]
    assert len(exemplars) == 2
    fig = run.plot_class(name, exemplars=2)
    assert isinstance(fig, Figure) and fig.canvas.manager is None  # not pyplot's
    assert fig._repr_png_().startswith(b"\x89PNG")  # a notebook shows it without pyplot
    assert len(fig.axes) == (1 + 2) * (1 + len(methods))
    grid = [fig.axes[i : i + 1 + len(methods)] for i in range(0, len(fig.axes), 1 + len(methods))]
    means = evidence["means"]
    drawn = grid[0][1].images[0].get_array()
    assert (drawn == heat_pixels(means[methods[0]], mask=means["mask"])).all()
    first = exemplars[0]
    drawn = grid[1][1].images[0].get_array()
    assert (drawn == overlay_pixels(first["image"], first["maps"][methods[0]], first["mask"])).all()
    assert methods[0] in grid[1][1].get_title()
    assert len(run.plot_class(name, exemplars=0).axes) == 1 + len(methods)


def test_an_unknown_class_names_the_known_ones(run):
    with pytest.raises(KeyError, match=r"No class 'zebra' in this run; its classes are 'circle'"):
        run.plot_class("zebra")


def test_a_run_without_evidence_has_its_table_but_nothing_to_draw():
    old = load_run(Path(__file__).parent / "data" / "run-0.1.0")
    assert list(old.classes["name"]) == ["circle", "square", "triangle", "star"]
    assert old.classes["C_gradcam"].notna().all()
    nothing = r"run-0\.1\.0: no evidence\.pt .*no mean maps or exemplars to draw"
    with pytest.raises(RunDirError, match=nothing):
        old.plot_class("circle")
