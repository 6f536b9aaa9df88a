"""The walk-through notebooks run: each is executed top to bottom in a fresh kernel, in a
temporary working directory and with a temporary TMPDIR, so running them writes nothing
into the checkout. A cell that raises fails the test with the cell's traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 600
"""Seconds one cell may take: training a model on a busy 2-core machine is the longest."""


def test_the_three_walk_throughs_are_there_and_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    assert [p.stem for p in NOTEBOOKS] == [
        "01_audit_a_model",
        "02_dataset_bias",
        "03_compare_runs",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel inherits it: WORK lands here
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # no migration warning from jupyter_core
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell's traceback, on an error
    print(f"{path.name}: {time.perf_counter() - started:.0f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]  # fmt: skip
    assert errors == []
    shown = {m for c in nb.cells if c.cell_type == "code" for o in c.outputs
             for m in o.get("data", {})}  # fmt: skip
    assert "text/html" in shown and "image/png" in shown  # tables and figures render
