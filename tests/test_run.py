"""The run record on disk: save -> load -> save gives the same files, byte for byte."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from auditor.config import AuditConfig
from auditor.errors import RunDirError
from auditor.models import load_model
from auditor.report.notebook import run_html
from auditor.run import FILES, _json, load_run, save_run
from auditor.runner.pipeline import audit


def as_json(value):
    """What a value reads back as from strict JSON: tuples as lists, NaN as null."""
    return json.loads(_json(value))


@pytest.fixture(scope="module")
def run(coco_dataset, resnet_weights):
    config = AuditConfig(image_size=32, batch_size=16)
    return audit(load_model("resnet18", resnet_weights), data=coco_dataset, config=config)


def test_save_load_save_round_trip_is_byte_identical(run, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    save_run(run, first)
    loaded = load_run(first)
    assert loaded.summary == run.summary and loaded.run_info == as_json(run.run_info)
    save_run(loaded, second)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_loaded_run_keeps_its_rows_and_evidence(run, tmp_path):
    import pandas as pd
    import torch

    loaded = load_run(save_run(run, tmp_path))
    pd.testing.assert_frame_equal(loaded.samples, run.samples)
    for name, ev in run.evidence["classes"].items():
        stored = loaded.evidence["classes"][name]
        assert [e["image_id"] for e in stored["exemplars"]] == [
            e["image_id"] for e in ev["exemplars"]
        ]
        for key, mean in ev["means"].items():
            assert torch.equal(stored["means"][key], mean)
    assert loaded.verdict == run.verdict and "<table" in run_html(loaded)


def test_a_notebook_shows_a_run_through_the_formatter_the_report_registers(run):
    from auditor.report.notebook import register_display
    from auditor.run import AuditRun

    class Formatter:
        def __init__(self) -> None:
            self.printers: dict[type, object] = {}

        def for_type(self, kind: type, printer: object) -> None:
            self.printers[kind] = printer

    formatter = Formatter()
    shell = SimpleNamespace(display_formatter=SimpleNamespace(formatters={"text/html": formatter}))
    assert register_display(shell)
    printer = formatter.printers[AuditRun]
    assert "<table" in printer(run) and run.verdict.upper() in printer(run).upper()
    assert not hasattr(AuditRun, "_repr_html_")


def test_a_run_of_the_previous_release_loads_renders_and_compares(tmp_path):
    """``tests/data/run-0.1.0``: a run written by the release before the typed record (no
    evidence.pt, no n_unscored, no shared_files, no .auditor.json marker)."""
    import shutil

    from click.testing import CliRunner

    from auditor.cli import cli

    old = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "run-0.1.0", old)
    loaded = load_run(old)
    summary = loaded.summary
    assert summary.schema_version == 1 and summary.primary_method == "gradcam"
    assert summary.dataset.scored == 48 and summary.dataset.shared_files.n == 0
    assert [c.name for c in summary.classes] == ["circle", "square", "triangle", "star"]
    assert all(c.metric("gradcam") is not None for c in summary.classes)
    rendered = CliRunner().invoke(cli, ["report", str(old), "--no-pdf"])
    assert rendered.exit_code == 0, rendered.output
    assert "evidence.pt is missing" in (old / "report.html").read_text()
    compared = CliRunner().invoke(cli, ["compare", str(old), str(old), "--out",
                                        str(tmp_path / "cmp")])  # fmt: skip
    assert compared.exit_code == 0 and "(paired, gradcam)" in compared.output, compared.output
    save_run(loaded, tmp_path / "again")
    assert load_run(tmp_path / "again").summary == summary


def test_a_summary_from_a_newer_auditor_is_refused_in_one_line(run, tmp_path):
    save_run(run, tmp_path / "run")
    path = tmp_path / "run" / "summary.json"
    stored = json.loads(path.read_text())
    path.write_text(json.dumps(stored | {"schema_version": 99}))
    with pytest.raises(RunDirError, match=r"summary.json: `schema_version` is 99: written by a "
                                          r"newer auditor"):  # fmt: skip
        load_run(tmp_path / "run")
    stored["classes"][2]["metrics"]["gradcam"]["ci95"] = "wide"
    path.write_text(json.dumps(stored))
    with pytest.raises(RunDirError, match=r"`classes\[2\]\.metrics\.gradcam\.ci95` must be"):
        load_run(tmp_path / "run")
