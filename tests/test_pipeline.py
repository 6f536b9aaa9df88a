"""The streaming audit through the Python API, on a tiny model built here."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from auditor.config import AuditConfig
from auditor.models import LoadedModel
from auditor.report.render import render_html
from auditor.runner.batch import SwapSample
from auditor.runner.pipeline import audit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tiny_model, coco_dataset):
    config = AuditConfig(image_size=32, batch_size=16, methods=("gradcam", "saliency"))
    return audit(copy.deepcopy(tiny_model), data=coco_dataset, config=config)


@pytest.fixture(scope="module")
def tiny_model(fitted_tiny_cnn):
    return LoadedModel(copy.deepcopy(fitted_tiny_cnn), "tiny", None)


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


def test_broken_swaps_get_maps_for_a_seeded_sample_of_each_class(tiny_run, tiny_model,
                                                                   coco_dataset):  # fmt: skip
    """With room for 4 per class (of 12), about a third of the broken swaps get maps: the
    same images whatever the batch size, and every other column is unchanged."""
    config = AuditConfig(image_size=32, batch_size=7, methods=("gradcam", "saliency"),
                         broken_swap_maps=4)  # fmt: skip
    sampled = audit(copy.deepcopy(tiny_model), data=coco_dataset, config=config).samples
    full = tiny_run.samples
    kept = sampled["swap_chance_corrected"].notna()
    assert 0 < kept.sum() < full["swap_chance_corrected"].notna().sum()
    np.testing.assert_allclose(  # the sampled ones keep their values
        sampled.loc[kept, "swap_chance_corrected"],
        full.loc[kept, "swap_chance_corrected"],
        rtol=1e-5,
    )
    again = SwapSample.of([0] * 12 + [1] * 12, 2, config)
    assert torch.equal(again.chosen(range(24), [0] * 12 + [1] * 12),
                       again.chosen(range(24), [0] * 12 + [1] * 12))  # fmt: skip
    assert SwapSample.of([0] * 3, 1, config).rates == (1.0,)  # a small class: every one
    columns = [c for c in full.columns if c != "swap_chance_corrected"]
    pd.testing.assert_frame_equal(sampled[columns], full[columns], rtol=1e-4)


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
