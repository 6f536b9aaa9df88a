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
from auditor.runner.pipeline import audit
from auditor.runner.sample import ClassSample, InterventionSample, uniform_hash

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
    for c in tiny_run.summary.classes:
        assert set(c.swap_metrics) == {"gradcam", "saliency"}
        assert c.swap_metrics["saliency"].n == int(per_image[labels == c.index].sum())


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
        atol=1e-6,  # float noise of another batch composition, near 0
    )
    again = InterventionSample.of([0] * 12 + [1] * 12, 2, config).broken_swaps
    assert torch.equal(again.chosen(range(24), [0] * 12 + [1] * 12),
                       again.chosen(range(24), [0] * 12 + [1] * 12))  # fmt: skip
    small = InterventionSample.of([0] * 3, 1, config)
    assert small.broken_swaps.rates == (1.0,) and small.interventions.rates == (1.0,)
    columns = [c for c in full.columns if c != "swap_chance_corrected"]
    pd.testing.assert_frame_equal(sampled[columns], full[columns], rtol=1e-4)


def test_report_shows_the_answers_a_swap_broke(tiny_run):
    classes = [dataclasses.replace(c, status="warn") for c in tiny_run.summary.classes]
    run = dataclasses.replace(tiny_run, summary=tiny_run.summary.replace(classes=classes))
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
    classes = [dataclasses.replace(c, status="pass", findings=[]) for c in tiny_run.summary.classes]
    summary = tiny_run.summary.replace(classes=classes, verdict="pass", flagged_classes=[])
    html = render_html(dataclasses.replace(tiny_run, summary=summary))
    assert 'class="class-section"' not in html
    overview = html.split('id="overview"')[1].split("</section>")[0]
    rows = overview.split('class="overview-row"')[1:]
    assert len(rows) == 4
    for row in rows:
        assert row.count("<img") == 1 + 2 + 1 + 2  # mask, two methods, histogram, exemplars


def test_interventions_run_on_a_seeded_sample_of_each_large_class(tiny_run, tiny_model,
                                                                 coco_dataset):  # fmt: skip
    """With room for 5 per class (of 12), about 5 images per class get the interventions:
    the same images whatever the batch size, with the values the full run gives them; the
    others have none (not a wrong prediction), and the statistics count only the sample."""
    columns = [
        "pred_swapped",
        "donor_label",
        "pred_background_only",
        "pred_same_class",
        "prob_label_swapped",
        "prob_label_background_only",
        "prob_label_same_class",
    ]
    configs = [
        AuditConfig(image_size=32, batch_size=b, methods=("gradcam", "saliency"),
                    intervention_images=5)
        for b in (16, 2)  # batches of 2: some get no interventions at all
    ]  # fmt: skip
    runs = [audit(copy.deepcopy(tiny_model), data=coco_dataset, config=c).samples for c in configs]
    full = tiny_run.samples
    sampled = runs[0]
    pd.testing.assert_frame_equal(runs[0][columns], runs[1][columns], rtol=1e-4)
    images = sampled[sampled["skip_reason"].isna()].drop_duplicates("sample")
    kept = images["pred_background_only"].notna()
    per_class = kept.groupby(images["label"]).sum()
    assert 0 < kept.sum() < len(images) and per_class.max() < 12
    assert images.loc[kept, "pred_swapped"].notna().all()
    assert images.loc[~kept, columns].isna().all().all()
    same = full.set_index(["sample", "method"]).loc[
        sampled.loc[sampled["pred_background_only"].notna()].set_index(["sample", "method"]).index
    ]
    on_sample = sampled[sampled["pred_background_only"].notna()].set_index(["sample", "method"])
    pd.testing.assert_frame_equal(on_sample[columns], same[columns], rtol=1e-4, check_dtype=False)
    # swap maps only where a sampled swap broke a right answer
    outside = sampled["pred_background_only"].isna()
    assert sampled.loc[outside, "swap_chance_corrected"].isna().all()


def test_sampled_interventions_are_counted_in_the_summary_and_the_report(tiny_model,
                                                                        coco_dataset):  # fmt: skip
    config = AuditConfig(image_size=32, batch_size=16, methods=("gradcam", "saliency"),
                         intervention_images=5)  # fmt: skip
    run = audit(copy.deepcopy(tiny_model), data=coco_dataset, config=config)
    images = run.samples[run.samples["skip_reason"].isna()].drop_duplicates("sample")
    for c in run.summary.classes:
        own = images[images["label"] == c.index]
        b = c.behaviour
        assert b.intervened == int(own["pred_background_only"].notna().sum()) < c.n
        hits = int((own["pred_background_only"] == c.index).sum())
        assert b.background_only_accuracy == pytest.approx(hits / b.intervened)
    html = render_html(run)
    assert "images, a seeded sample" in html and "images up to about 5," in html


def test_class_sample_keeps_small_classes_whole_and_about_cap_of_large_ones():
    sample = ClassSample.of(np.array([10, 4000]), 200, seed=3, stream=14)
    assert sample.rates[0] == 1.0
    chosen = sample.chosen(range(4010), [0] * 10 + [1] * 4000)
    assert chosen[:10].all()
    assert 160 <= int(chosen[10:].sum()) <= 240  # binomial(4000, 0.05): sd 14
    assert torch.equal(chosen[10:20], sample.chosen(range(10, 20), [1] * 10))  # batch-free
    assert ClassSample.of(np.array([5]), None, seed=0, stream=1).rates == (1.0,)
    assert ClassSample.of(np.array([5]), 0, seed=0, stream=1).chosen([0, 1], [0, 0]).sum() == 0


def test_uniform_hash_is_uniform_and_differs_by_stream():
    draws = uniform_hash(0, 14, np.arange(100_000, dtype=np.uint64))
    assert draws.min() >= 0 and draws.max() < 1
    counts = np.histogram(draws, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 10_000) < 500)  # 5 sd of a binomial(1e5, 0.1)
    other = uniform_hash(0, 15, np.arange(100_000, dtype=np.uint64))
    assert abs(np.corrcoef(draws, other)[0, 1]) < 0.02


def test_a_method_no_more_faithful_than_a_random_map_drives_nothing(tiny_model, coco_dataset,
                                                                     monkeypatch):  # fmt: skip
    """The faithfulness check is wired into the audit: every method is measured on the probe
    images (its own phase in the timings, its numbers in the summary and the method card),
    and a method no more faithful than a random map joins the untrusted ones with its ROAD
    numbers as the reason. Here saliency's maps are replaced by noise before the check."""
    import auditor.runner.preflight as preflight

    measure = preflight.faithfulness

    def noisy_saliency(net, inputs, labels, maps, **kwargs):
        maps = {
            **maps,
            "saliency": torch.rand(
                maps["saliency"].shape, generator=torch.Generator().manual_seed(5)
            ),
        }
        return measure(net, inputs, labels, maps, **kwargs)  # fmt: skip

    monkeypatch.setattr(preflight, "faithfulness", noisy_saliency)
    config = AuditConfig(image_size=32, batch_size=16, methods=("gradcam", "saliency"))
    run = audit(copy.deepcopy(tiny_model), data=coco_dataset, config=config)
    trust = run.summary.trust
    assert set(trust.faithfulness) == {"gradcam", "saliency"}
    assert trust.faithfulness["saliency"].n == config.detect.faithfulness_samples
    assert not trust.faithfulness["saliency"].faithful
    assert trust.untrusted["saliency"].startswith("is no more faithful than a random map")
    assert run.run_info["timings"]["faithfulness_s"] > 0
    assert run.run_info["timings"]["overlay_s"] > 0  # the mean-background hijack test's own phase
    html = render_html(run)
    assert "Faithfulness (ROAD, Rong et al. 2022)" in html
    assert "saliency is reported but does not drive flags: is no more faithful" in html
    detect = dataclasses.replace(config.detect, faithfulness_samples=0)
    off = AuditConfig(image_size=32, batch_size=16, methods=("gradcam",), detect=detect)
    quiet = audit(copy.deepcopy(tiny_model), data=coco_dataset, config=off)
    assert quiet.summary.trust.faithfulness == {}
