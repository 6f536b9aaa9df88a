"""The streaming audit through the Python API, on a tiny model built here."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from auditor.config import AuditConfig
from auditor.data.transforms import AuditTransform
from auditor.lab.training import load_tensors
from auditor.models import LoadedModel
from auditor.report.render import render_html
from auditor.runner.pipeline import audit
from tests.conftest import TinyCNN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(coco_dataset):
    """A tiny CNN fitted to the audit images themselves: it reads backgrounds as well as
    shapes, so swapping the background breaks some of its right answers."""
    torch.manual_seed(3)
    inputs, targets = load_tensors(coco_dataset, AuditTransform(32))
    net = TinyCNN(classes=4)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), targets).backward()
        optimiser.step()
    model = LoadedModel(net.eval(), "tiny", None)
    config = AuditConfig(image_size=32, batch_size=16, methods=("gradcam", "saliency"))
    return audit(model, data=coco_dataset, config=config)


def test_swap_maps_are_scored_exactly_where_the_swap_broke_a_right_answer(tiny_run):
    scored = tiny_run.samples[tiny_run.samples["skip_reason"].isna()]
    broken = (
        scored["correct"]
        & (scored["pred_swapped"] >= 0)
        & (scored["pred_swapped"] != scored["label"])
    )
    finite = scored["swap_chance_corrected"].notna()
    assert broken.any() and finite.equals(broken)
    assert np.all(np.abs(scored.loc[finite, "swap_chance_corrected"]) <= 1)
    per_image = broken[scored["method"] == "saliency"]
    labels = scored.loc[per_image.index, "label"]
    for c in tiny_run.summary["classes"]:
        assert set(c["swap_metrics"]) == {"gradcam", "saliency"}
        assert c["swap_metrics"]["saliency"]["n"] == int(per_image[labels == c["index"]].sum())


def test_report_shows_the_answers_a_swap_broke(tiny_run):
    summary = copy.deepcopy(tiny_run.summary)
    for c in summary["classes"]:
        c["status"] = "warn"  # every class gets its section
    run = dataclasses.replace(tiny_run, summary=summary)
    classes = run.evidence["classes"]
    with_broken = [name for name, ev in classes.items() if ev["broken_exemplars"]]
    assert with_broken
    assert all(len(ev["broken_exemplars"]) <= 4 for ev in classes.values())
    html = render_html(run)
    assert html.count("Answers the background swap broke") == len(with_broken)
    shown = sum(len(classes[name]["broken_exemplars"]) for name in with_broken)
    assert html.count("swapped, mask outlined") == shown


def test_a_passing_report_still_shows_every_class(tiny_run):
    """A reviewer signs off on pictures, not on numbers alone: with every class passing, each
    still gets its mean mask, mean maps, histogram and two exemplars."""
    summary = copy.deepcopy(tiny_run.summary)
    for c in summary["classes"]:
        c["status"], c["findings"] = "pass", []
    summary["verdict"], summary["flagged_classes"] = "pass", []
    html = render_html(dataclasses.replace(tiny_run, summary=summary))
    assert 'class="class-section"' not in html
    overview = html.split('id="overview"')[1].split("</section>")[0]
    rows = overview.split('class="overview-row"')[1:]
    assert len(rows) == 4
    for row in rows:
        assert row.count("<img") == 1 + 2 + 1 + 2  # mask, two methods, histogram, exemplars
