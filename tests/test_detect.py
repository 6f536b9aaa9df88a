import numpy as np
import pandas as pd
import pytest
import torch

from auditor.config import DetectConfig
from auditor.detect import bootstrap_ci, class_results, verdict
from auditor.detect.interventions import (
    DonorPool,
    background_only,
    dilate,
    fill_region,
    swap_background,
)
from auditor.record import ClassRecord, FindingRecord
from auditor.record.parse import from_dict

NAMES = ["a", "b", "c"]


def finding_record(entry: dict) -> FindingRecord:
    return from_dict(FindingRecord, entry, "findings[0]")


def as_record(entry: dict) -> ClassRecord:
    """A class's stored entry (``ClassResult.to_dict()``) as the report reads it."""
    return from_dict(ClassRecord, entry, "classes[0]")


def frame(
    scores: dict[int, float],
    *,
    n: int = 40,
    bg_only: dict[int, int] | None = None,
    swap_correct: dict[int, bool] | None = None,
) -> pd.DataFrame:
    """Rows for ``n`` images per class with chance-corrected ``scores[label]`` (+ small noise)."""
    rng = np.random.default_rng(0)
    rows = []
    for label, score in scores.items():
        for i in range(n):
            sample = label * 1000 + i
            donor = (label + 1 + i % 2) % 3
            rows.append({
                "sample": sample, "label": label, "method": "gradcam", "correct": True,
                "chance_corrected": score + rng.normal(0, 0.05), "skip_reason": None,
                "pred_swapped": label if (swap_correct or {}).get(label, True) else donor,
                "donor_label": donor,
                "pred_background_only": _background_only(bg_only or {}, label, i),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _background_only(planted: dict[int, int], label: int, i: int) -> int:
    """Planted classes give their prediction 3 times in 4; others cycle through the classes."""
    if label in planted:
        return planted[label] if i % 4 else 2
    return i % 3


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).normal(0.3, 0.2, 200)
    ci = bootstrap_ci(values, resamples=2000, confidence=0.95, rng=np.random.default_rng(0))
    again = bootstrap_ci(values, resamples=2000, confidence=0.95, rng=np.random.default_rng(0))
    assert ci == again and ci[0] < values.mean() < ci[1]
    assert np.isnan(
        bootstrap_ci(values[:1], resamples=100, confidence=0.95, rng=np.random.default_rng())[0]
    )


def test_flag_needs_saliency_and_behaviour():
    samples = frame({0: -0.1, 1: 0.5, 2: 0.5}, bg_only={0: 0}, swap_correct={0: False})
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig())
    assert [r.status for r in results] == ["flag", "pass", "pass"]
    found = {f.kind: f for f in results[0].findings}
    assert set(found) == {"off_object", "swap_gap", "background_only"}
    alone = found["background_only"]
    assert alone.value == 0.75 and alone.n == 40 and alone.p < 0.05  # 3 in 4, planted
    images = samples.drop_duplicates("sample")
    rates = [(images.query(f"label == {c}")["pred_background_only"] == 0).mean() for c in (1, 2)]
    assert alone.reference == max(rates) and alone.reference_class == 1 + int(np.argmax(rates))
    assert found["swap_gap"].value == 1.0 and found["swap_gap"].threshold == 0.1
    assert found["off_object"].method == "gradcam" and found["off_object"].ci[1] < 0
    assert verdict(results) == "fail"


def test_saliency_alone_warns_only_where_no_intervention_could_show_survival():
    """Without interventions, maps off the object are the only evidence: a warning. With
    interventions that show the class keeps its accuracy on other backgrounds, the same maps
    are a note: the class passes and the verdict is left alone."""
    samples = frame({0: -0.1, 1: 0.5, 2: 0.5})
    blind = samples.drop(columns=["pred_swapped", "donor_label", "pred_background_only"])
    results = class_results(blind, NAMES, ["gradcam"], DetectConfig())
    assert results[0].status == "warn" and verdict(results) == "warn"
    assert [f.kind for f in results[0].findings] == ["off_object"]
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig())
    assert [r.status for r in results] == ["pass"] * 3 and verdict(results) == "pass"
    assert results[0].findings == [] and [f.kind for f in results[0].notes] == ["off_object"]
    entry = results[0].to_dict()
    assert entry["notes"][0]["kind"] == "off_object" and entry["findings"] == []


def test_findings_read_as_sentences():
    """The words come from the stored findings alone, so a report can phrase a run anew."""
    from auditor.report.words import reasons

    samples = frame({0: -0.1, 1: 0.5, 2: 0.5}, bg_only={0: 0}, swap_correct={0: False})
    entry = class_results(samples, NAMES, ["gradcam"], DetectConfig())[0].to_dict()
    said = reasons(as_record(entry), NAMES, confidence=0.95)
    assert said[1] == (
        "moving the object onto backgrounds that identify no class costs 100% accuracy "
        "(CI [100%, 100%])"
    )
    assert said[2].startswith("with the object removed, the background alone still gives this "
                              "class 75% of the time, against at most 35% for another class's "
                              "backgrounds (b; p = ")  # fmt: skip
    assert said[0].startswith("gradcam: mean chance-corrected energy -0.10, 95% CI [")
    from auditor.report.words import notes

    noted = class_results(frame({0: -0.1, 1: 0.5, 2: 0.5}), NAMES, ["gradcam"], DetectConfig())
    record = as_record(noted[0].to_dict())
    assert reasons(record, NAMES, confidence=0.95) == []
    said = notes(record, NAMES, confidence=0.95)
    assert said[0].startswith("gradcam: mean chance-corrected energy -0.10, 95% CI [")
    assert said[-1].startswith("noted, not counted: the class's own images keep their accuracy")


def test_maps_of_broken_swaps_confirm_reliance_the_originals_cannot_show():
    """Class 0 is recognised by the absence of another class's cue: its own maps sit on the
    object, but the wrong answers the swap causes are read off the new background."""
    from auditor.report.words import sentence

    samples = frame({0: 0.3, 1: 0.5, 2: 0.5}, bg_only={0: 0}, swap_correct={0: False})
    own = samples["label"] == 0
    samples["swap_chance_corrected"] = np.where(own, -0.1, np.nan)
    result = class_results(samples, NAMES, ["gradcam"], DetectConfig())[0]
    assert result.status == "flag"
    after_swap = [f for f in result.findings if f.kind == "off_object_after_swap"]
    assert len(after_swap) == 1 and after_swap[0].n == 40 and after_swap[0].value < 0
    assert result.swap_metrics["gradcam"].n == 40 and result.metrics["gradcam"].mean > 0
    samples["swap_chance_corrected"] = np.where(own, 0.3, np.nan)  # broken answers on the object
    missed = class_results(samples, NAMES, ["gradcam"], DetectConfig())[0]
    assert missed.status == "flag"  # both interventions agree: flagged whatever the maps say
    assert [f.kind for f in missed.findings] == ["swap_gap", "background_only", "maps_missed_cue"]
    last = finding_record(missed.findings[-1].to_dict())
    assert "did not localise the cue" in sentence(last, NAMES, confidence=0.95)
    one = frame({0: 0.3, 1: 0.5, 2: 0.5}, swap_correct={0: False})  # one intervention only
    one["swap_chance_corrected"] = np.where(one["label"] == 0, 0.3, np.nan)
    assert class_results(one, NAMES, ["gradcam"], DetectConfig())[0].status == "warn"
    # broken-swap maps no further off than the other classes' maps are no evidence
    level = frame({0: 0.3, 1: 0.3, 2: 0.3}, bg_only={0: 0}, swap_correct={0: False})
    level["swap_chance_corrected"] = np.where(level["label"] == 0, 0.25, np.nan)
    level_result = class_results(level, NAMES, ["gradcam"], DetectConfig())[0]
    assert "off_object_after_swap" not in {f.kind for f in level_result.findings}


def test_maps_of_broken_swaps_without_behavioural_evidence_raise_nothing():
    samples = frame({0: 0.3, 1: 0.5, 2: 0.5})
    samples["swap_chance_corrected"] = np.where(samples["label"] == 0, -0.1, np.nan)
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig())
    assert [r.status for r in results] == ["pass"] * 3
    assert results[0].to_dict()["swap_metrics"]["gradcam"]["n"] == 40


def test_broken_counts_right_answers_the_swap_made_wrong():
    from auditor.detect.views import Behaviour

    swapped = torch.tensor([0, 1, 2, -1, 1])
    b = Behaviour({"swapped": swapped}, {}, swapped, torch.zeros(5, 3, 2, 2))
    targets, predictions = torch.tensor([0, 0, 1, 0, 0]), torch.tensor([0, 0, 2, 0, 1])
    assert b.broken(targets, predictions).tolist() == [False, True, False, False, False]


def test_small_class_is_insufficient_not_pass():
    samples = frame({0: 0.5, 1: 0.5, 2: 0.5}, n=10)
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig(min_n=20))
    assert {r.status for r in results} == {"insufficient_data"}


def test_default_prediction_on_empty_background_is_not_a_cue():
    """Every class's background alone gives class 0 (a "nothing here" default): no evidence."""
    samples = frame({0: 0.5, 1: 0.5, 2: 0.5}, bg_only={0: 0, 1: 0, 2: 0})
    samples["pred_background_only"] = 0
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig())
    assert results[0].behaviour is not None
    assert results[0].behaviour.background_only.p > 0.05
    assert [r.status for r in results] == ["pass"] * 3


def test_swap_keeps_object_pixels_and_fill_keeps_background():
    g = torch.Generator().manual_seed(0)
    inputs, donors = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:5, 3:6] = True
    swapped = swap_background(inputs, masks, donors)
    assert torch.equal(swapped[:, :, 2:5, 3:6], inputs[:, :, 2:5, 3:6])
    assert torch.equal(swapped[:, :, 0], donors[:, :, 0])
    filled = fill_region(inputs, masks)
    assert torch.equal(filled[:, :, 0], inputs[:, :, 0])
    assert not torch.equal(filled[:, :, 2:5, 3:6], inputs[:, :, 2:5, 3:6])


def test_donor_choice_depends_on_the_sample_not_the_batch():
    pool = DonorPool(torch.arange(6.0).view(6, 1, 1, 1), torch.tensor([0, 0, 1, 1, 2, 2]))
    labels, keys = torch.tensor([0, 1, 2, 1]), torch.tensor([10, 11, 12, 13])
    backgrounds, donor_labels = pool.pick(labels, keys)
    alone, alone_labels = pool.pick(labels[2:3], keys[2:3])
    assert torch.equal(backgrounds[2:3], alone) and torch.equal(donor_labels[2:3], alone_labels)
    assert (donor_labels != labels).all()


def test_background_only_leaves_no_outline_of_the_object():
    """A one-pixel rim of object colour outside the annotated mask must be filled too."""
    inputs = torch.zeros(1, 3, 40, 40)
    inputs[:, :, 10:30, 10:30] = 5.0  # the drawn object
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[:, 11:29, 11:29] = True  # the annotation misses the rim
    filled = background_only(inputs, masks)
    assert filled[:, :, 10:30, 10:30].max() < 5.0
    assert torch.equal(filled[:, :, :5], inputs[:, :, :5])
    assert dilate(masks, 1).sum() == 20 * 20


def test_benjamini_hochberg_matches_scipy():
    from scipy.stats import false_discovery_control

    from auditor.detect.stats_util import benjamini_hochberg

    p = [0.01, 0.04, 0.03, 0.2, 0.5, 0.001]
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p), rtol=1e-12)
    with_nan = benjamini_hochberg([0.01, float("nan"), 0.04])
    assert np.isnan(with_nan[1])
    np.testing.assert_allclose(np.array(with_nan)[[0, 2]], false_discovery_control([0.01, 0.04]))


def test_results_are_split_by_outcome_and_carry_tests():
    samples = frame({0: -0.1, 1: 0.5, 2: 0.5}, bg_only={0: 0}, swap_correct={0: False})
    samples.loc[samples.index % 5 == 0, "correct"] = False
    gradcam = class_results(samples, NAMES, ["gradcam"], DetectConfig())[0].metrics["gradcam"]
    outcome = gradcam.by_outcome
    assert outcome["correct"]["n"] + outcome["wrong"]["n"] == 40 and outcome["wrong"]["n"] == 8
    assert gradcam.p_below < 1e-6 and gradcam.p_adjusted >= gradcam.p_below
    assert gradcam.effect_size < -1


def test_untrusted_methods_are_reported_but_never_drive_a_flag():
    samples = frame({0: -0.1, 1: 0.5, 2: 0.5}, swap_correct={0: False})
    results = class_results(
        samples, NAMES, ["gradcam"], DetectConfig(), untrusted={"gradcam": "failed sanity check"}
    )
    assert results[0].status == "warn" and "gradcam" in results[0].metrics
    both = frame({0: -0.1, 1: 0.5, 2: 0.5}, bg_only={0: 0}, swap_correct={0: False})
    result = class_results(
        both, NAMES, ["gradcam"], DetectConfig(), untrusted={"gradcam": "failed sanity check"}
    )[0]  # two interventions flag on their own; the maps that may not drive are not cited
    assert result.status == "flag" and result.findings[-1].kind == "maps_missed_cue"
    assert result.findings[-1].value == 0  # no method could have localised it


def test_removed_object_leaves_texture_not_its_silhouette():
    """The filled box holds only the image's own background values (a striped texture
    here), so neither a smooth patch nor the object's colour outlines it."""
    from auditor.detect.interventions import bounding_boxes, margin, remove_object

    stripes = (torch.arange(32) % 4 < 2).float()
    inputs = stripes.view(1, 1, 32, 1).expand(1, 3, 32, 32).clone()
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    masks[0] = (yy - 16) ** 2 + (xx - 16) ** 2 < 36  # a disc
    inputs[:, :, masks[0]] = 7.0
    out = remove_object(inputs, masks)
    assert margin(masks) == 1
    box = bounding_boxes(dilate(masks, 1))[0]
    assert box.sum() == 13 * 13 and box[10:23, 10:23].all()  # the disc spans 11..21
    assert set(out[0, 0, box].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out[:, :, ~box], inputs[:, :, ~box])


def test_background_only_is_also_tested_against_chance():
    from scipy.stats import binomtest

    samples = frame({0: 0.5, 1: 0.5, 2: 0.5}, bg_only={0: 0})
    b = class_results(samples, NAMES, ["gradcam"], DetectConfig())[0].to_dict()["behaviour"]
    hits = int(
        (samples.drop_duplicates("sample").query("label == 0")["pred_background_only"] == 0).sum()
    )
    expected = binomtest(hits, 40, 1 / 3, alternative="greater").pvalue
    assert b["background_only_chance"] == 1 / 3 and hits == 30
    assert abs(b["background_only_binomial_p"] - expected) < 1e-12


def test_a_part_whose_maps_sit_further_off_the_object_than_its_class_shows_attribution():
    from auditor.detect.rule import off_object_vs_class, with_attribution

    rng = np.random.default_rng(1)
    rows = lambda values: pd.DataFrame({"method": "gradcam", "chance_corrected": values})  # noqa: E731
    part, rest = rows(rng.normal(0.20, 0.06, 50)), rows(rng.normal(0.35, 0.06, 50))
    config = DetectConfig()
    (finding,) = off_object_vs_class(part, rest, ["gradcam"], config)
    difference = part["chance_corrected"].mean() - rest["chance_corrected"].mean()
    assert finding.kind == "off_object_vs_class" and finding.value == pytest.approx(difference)
    assert finding.ci[0] < difference < finding.ci[1] < 0 and finding.effect_size < -1
    assert finding.reference == pytest.approx(rest["chance_corrected"].mean())
    # the same maps on both sides, a small effect, too few images or an untrusted method: none
    assert off_object_vs_class(rest, rest, ["gradcam"], config) == []
    small = rows(rng.normal(0.34, 0.06, 50))
    assert off_object_vs_class(small, rest, ["gradcam"], config) == []
    assert off_object_vs_class(part.head(19), rest, ["gradcam"], config) == []
    assert off_object_vs_class(part, rest, [], config) == []
    # with the interventions' evidence it flags a part the class rule only warned about
    samples = frame({0: 0.5, 1: 0.5, 2: 0.5}, swap_correct={0: False})
    warned = class_results(samples, NAMES, ["gradcam"], config)[0]
    assert warned.status == "warn"
    flagged = with_attribution(warned, [finding], config)
    assert flagged.status == "flag" and finding in flagged.findings
    # a class that keeps its accuracy on other backgrounds: the part's maps are a note
    calm = class_results(frame({0: 0.5, 1: 0.5, 2: 0.5}), NAMES, ["gradcam"], DetectConfig())[0]
    noted = with_attribution(calm, [finding], config)
    assert noted.status == "pass" and noted.notes == [finding]


def test_the_welch_difference_matches_a_hand_computation():
    from scipy import stats

    from auditor.detect.stats_util import welch_below

    a, b = np.array([0.1, 0.2, 0.15, 0.3, 0.05]), np.array([0.4, 0.35, 0.5, 0.45, 0.3, 0.42])
    difference, (low, high), d, p = welch_below(a, b, 0.95)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert difference == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((difference - half, difference + half))
    assert p == pytest.approx(stats.t.cdf(difference / np.sqrt(va + vb), df))
    pooled = np.sqrt((4 * a.var(ddof=1) + 5 * b.var(ddof=1)) / 9)
    assert d == pytest.approx(difference / pooled)


def test_a_subgroups_relative_finding_reads_as_both_means():
    from auditor.detect.findings import Finding
    from auditor.report.words import sentence

    finding = Finding("off_object_vs_class", "mean_chance_corrected_minus_rest_of_class", -0.15,
                      0.5, 103, method="gradcam", ci=(-0.18, -0.12), p=5e-20, effect_size=-1.53,
                      reference=0.35)  # fmt: skip
    said = sentence(finding_record(finding.to_dict()), NAMES, confidence=0.95)
    assert "mean chance-corrected energy +0.20 against +0.35 (difference -0.15" in said


def test_same_class_donor_is_another_image_of_the_class():
    pool = DonorPool(torch.arange(5.0).view(5, 1, 1, 1), torch.tensor([0, 0, 1, 1, 2]),
                     positions=torch.tensor([10, 11, 12, 13, 14]))  # fmt: skip
    labels, keys = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([10, 99, 13, 14, 15])
    backgrounds, donors = pool.pick(labels, keys, same_class=True)
    assert donors.tolist() == [0, 0, 1, -1, 2]  # position 14 is the only class-2 image
    assert backgrounds[0].item() == 1.0  # not its own background (position 10)
    assert backgrounds[2].item() == 2.0  # position 13 is itself: the other class-1 image


def test_vectorised_donor_choice_is_the_documented_hash():
    labels_pool = torch.tensor([0, 1, 1, 2, 0, 2, 1])
    pool = DonorPool(torch.arange(7.0).view(7, 1, 1, 1), labels_pool)
    labels, keys = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([3, 17, 123456, 7, 0])
    backgrounds, _ = pool.pick(labels, keys)
    for label, key, got in zip(labels.tolist(), keys.tolist(), backgrounds.flatten().tolist()):
        options = [i for i, c in enumerate(labels_pool.tolist()) if c != label]
        assert got == options[(key * 2654435761) % len(options)]


def challenge_frame(n: int = 60) -> pd.DataFrame:
    """Four classes. Class 3's background identifies it; class 0's objects are called 3 on
    class 3's backgrounds (hijacked) and right elsewhere; class 2 relies on its own
    background (wrong on every other class's); classes 1 and 3 are robust."""
    rows = []
    for label in range(4):
        for i in range(n):
            donor = [c for c in range(4) if c != label][i % 3]
            swapped = {0: 3 if donor == 3 else 0, 2: donor}.get(label, label)
            rows.append({
                "sample": label * 1000 + i, "label": label, "method": "gradcam", "correct": True,
                "chance_corrected": 0.5 + 0.01 * (i % 5), "skip_reason": None,
                "pred_swapped": swapped, "donor_label": donor, "pred_same_class": label,
                "pred_background_only": 3 if label == 3 else i % 4,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_a_class_taken_over_by_another_class_backgrounds_is_vulnerable():
    from auditor.report.words import reasons

    names = ["a", "b", "c", "d"]
    results = class_results(challenge_frame(), names, ["gradcam"], DetectConfig())
    status = {r.name: r.status for r in results}
    # a's vulnerability is a note (d's hijack, not a's reliance): it leaves the status alone
    assert status["a"] == "pass" and status["b"] == "pass" and results[0].findings == []
    assert "background_only" in [f.kind for f in results[3].findings]  # d's own cue
    (finding,) = results[0].notes
    assert finding.kind == "vulnerable" and finding.reference_class == 3
    assert finding.value == pytest.approx(1.0) and finding.follow_rate == pytest.approx(1.0)
    assert finding.neutral_donors  # compared with b's and c's backgrounds
    # c relies on its own background: it loses on every donor alike, which is reliance
    # (the swap gap), not vulnerability to one class's backgrounds
    assert "vulnerable" not in {f.kind for f in results[2].findings}
    assert "swap_gap" in {f.kind for f in results[2].findings}
    from auditor.report.words import notes

    said = notes(as_record(results[0].to_dict()), names, confidence=0.95)
    assert reasons(as_record(results[0].to_dict()), names, confidence=0.95) == []
    assert said == [
        "vulnerable to d's backgrounds: on them the object is called this class 0% of the time, "
        "against 100% on backgrounds that identify no class (drop 100%, CI [82%, 100%]; "
        f"one-sided Fisher, BH-adjusted p = {finding.p:.1g}); 100% were called d"
    ]


def test_background_challenge_quantities_by_their_own_names():
    from auditor.runner.summary import challenge_summary

    names = ["a", "b", "c", "d"]
    results = class_results(challenge_frame(), names, ["gradcam"], DetectConfig())
    c = results[2].challenge
    assert c is not None
    assert (c.mixed_same.accuracy, c.mixed_rand.accuracy, c.bg_gap) == (1.0, 0.0, 1.0)
    a = results[0].challenge
    assert a is not None and a.mixed_rand.accuracy == pytest.approx(2 / 3)
    assert a.cells[3].accuracy == 0.0 and a.cells[3].called_donor == 20
    table = challenge_summary(results, names)
    assert table is not None
    assert table["accuracy"][0] == [1.0, 1.0, 1.0, 0.0]  # a's objects on a, b, c, d
    assert table["accuracy"][2] == [0.0, 0.0, 1.0, 0.0]  # c only on its own
    assert table["n"][1] == [20, 60, 20, 20]
    total = sum(len(r.challenge.cells) for r in results if r.challenge)
    assert total == 16
    assert table["mixed_same_accuracy"] == 1.0
    assert table["bg_gap"] == pytest.approx(1.0 - (2 / 3 + 1 + 0 + 1) / 4)


def _texture_fill_one_offset_at_a_time(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The definition: try the offsets nearest first, copying each pixel from the first
    whose source lies outside the region."""
    from auditor.detect.interventions import _offsets

    out, todo = inputs.clone(), region.clone()
    for dy, dx in _offsets(*inputs.shape[-2:]):
        take = todo & torch.roll(~region, (dy, dx), dims=(1, 2))
        out = torch.where(take[:, None], torch.roll(inputs, (dy, dx), dims=(2, 3)), out)
        todo &= ~take
    return fill_region(out, todo) if todo.any() else out


def test_texture_fill_equals_its_one_offset_at_a_time_definition():
    from auditor.detect.interventions import bounding_boxes, texture_fill

    g = torch.Generator().manual_seed(3)
    inputs = torch.randn(6, 3, 48, 40, generator=g)
    masks = torch.zeros(6, 48, 40, dtype=torch.bool)
    for i, (y, x, s) in enumerate([(2, 3, 9), (10, 10, 30), (0, 0, 47), (30, 20, 5), (5, 1, 38),
                                   (0, 0, 0)]):  # fmt: skip
        masks[i, y : y + s, x : x + s] = True
    region = bounding_boxes(masks, grow=2)
    assert torch.equal(
        texture_fill(inputs, region), _texture_fill_one_offset_at_a_time(inputs, region)
    )
    assert torch.equal(bounding_boxes(masks, grow=2), bounding_boxes(dilate(masks, 2)))


def test_dilation_by_rows_then_columns_is_the_square_dilation():
    import torch.nn.functional as F

    masks = torch.rand(4, 30, 26, generator=torch.Generator().manual_seed(2)) > 0.98
    for radius in (1, 2, 5):
        square = F.max_pool2d(masks[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
        assert torch.equal(dilate(masks, radius), square[:, 0] > 0)


def test_a_class_with_no_trusted_evidence_is_not_passed():
    """Every method untrusted, and a model that never gets class 0 right: nothing could have
    shown reliance, so class 0 is not judged; class 1, right on every image, earns its pass
    from the interventions alone."""
    from auditor.report.words import reasons

    samples = frame({0: 0.5, 1: 0.5, 2: 0.5})
    samples.loc[samples["label"] == 0, "correct"] = False
    samples.loc[samples["label"] == 0, "pred_swapped"] = 2
    untrusted = {"gradcam": "failed the randomisation check"}
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig(), untrusted=untrusted)
    assert [r.status for r in results] == ["insufficient_data", "pass", "pass"]
    (missing,) = results[0].findings
    assert missing.kind == "no_evidence" and missing.value == 0.0 and missing.n == 40
    said = reasons(as_record(results[0].to_dict()), NAMES, confidence=0.95)
    assert said == [
        "no trusted evidence either way: no attribution method passed the trust checks (see "
        "Method), and the interventions could not show reliance: the model is right on 0% of "
        "its 40 intervened images, less than the 10% a swap would have to take away"
    ]
    assert verdict(results) == "warn"
    trusted = class_results(samples, NAMES, ["gradcam"], DetectConfig())  # maps on the object
    assert trusted[0].status == "pass"
    no_interventions = samples.drop(columns=["pred_swapped", "donor_label",
                                             "pred_background_only"])  # fmt: skip
    alone = class_results(no_interventions, NAMES, ["gradcam"], DetectConfig(),
                          untrusted=untrusted)  # fmt: skip
    assert {r.status for r in alone} == {"insufficient_data"}
    assert (
        "no intervention could be run"
        in reasons(as_record(alone[1].to_dict()), NAMES, confidence=0.95)[0]
    )


def _compared_side(correct: list[bool], status: str):
    from auditor.detect.compare import Judgement, Side

    n = len(correct)
    samples = pd.DataFrame({
        "sample": range(n), "image_id": [f"im{i}" for i in range(n)], "label": 0,
        "method": "gradcam", "skip_reason": None, "correct": correct,
        "chance_corrected": np.linspace(0.2, 0.4, n),
    })  # fmt: skip
    return Side([Judgement(0, "bird", status)], ["gradcam"], "gradcam", samples, DetectConfig(),
                "same data")  # fmt: skip


def test_a_class_the_model_stopped_getting_right_regressed_though_its_status_is_unranked():
    """flag -> insufficient data is unranked, C unchanged: the 95-point accuracy fall (paired
    CI about [-1.0, -0.9]) is what makes it a regression; an unchanged accuracy is none."""
    from auditor.detect.compare import compare

    before = _compared_side([True] * 40, "flag")
    fell = compare(before, _compared_side([True] * 2 + [False] * 38, "insufficient_data"))
    (change,) = fell.classes
    assert change.regressions == ("accuracy",)
    assert change.accuracy.change == pytest.approx(-0.95) and change.accuracy.ci[1] < -0.85
    kept = compare(before, _compared_side([True] * 40, "insufficient_data"))
    assert kept.classes[0].regressions == ()
