"""The scale of findings (issue 24): flag and warn decide, notes only inform. Each new
statistic against a hand computation, and each kind of note shown to leave the status and
the verdict alone."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact, ttest_ind
from test_detect import NAMES, as_record, challenge_frame, frame

from auditor.config import DetectConfig
from auditor.detect import class_results, verdict
from auditor.detect.behaviour import BehaviourStats, Identification
from auditor.detect.decide import survives
from auditor.detect.hotspot import Hotspot
from auditor.detect.rule import with_hotspots
from auditor.detect.stats import adjusted_method_stats
from auditor.detect.stats_util import benjamini_hochberg, newcombe
from auditor.report.table import _interventions
from auditor.report.words import notes, reasons


def test_a_class_is_held_against_the_other_classes_as_a_welch_test_by_hand():
    rng = np.random.default_rng(3)
    values = {
        0: rng.normal(-0.1, 0.1, 30),
        1: rng.normal(0.2, 0.1, 30),
        2: rng.normal(0.1, 0.2, 25),
    }
    scored = pd.DataFrame([
        {"label": c, "method": "gradcam", "chance_corrected": v, "correct": True}
        for c, vs in values.items() for v in vs
    ])  # fmt: skip
    stats = adjusted_method_stats(scored, 3, ["gradcam"], DetectConfig())
    raw = []
    for c in range(3):
        own = values[c]
        others = np.concatenate([values[o] for o in range(3) if o != c])
        got = stats[c]["gradcam"].vs_others
        assert got is not None
        assert got.difference == pytest.approx(own.mean() - others.mean())
        assert got.others == pytest.approx(others.mean())
        p = ttest_ind(own, others, equal_var=False, alternative="less").pvalue
        assert got.p == pytest.approx(p)
        pooled = np.sqrt(
            ((own.size - 1) * own.var(ddof=1) + (others.size - 1) * others.var(ddof=1))
            / (own.size + others.size - 2)
        )
        assert got.effect_size == pytest.approx((own.mean() - others.mean()) / pooled)
        raw.append(p)
    adjusted = benjamini_hochberg(raw)
    assert [stats[c]["gradcam"].vs_others.p_adjusted for c in range(3)] == pytest.approx(adjusted)
    assert "vs_other_classes" in stats[0]["gradcam"].to_dict()


def test_a_method_off_the_object_for_every_class_is_evidence_against_none():
    """Saliency below zero for every class (the small ConvNeXt of the ladder): an absolute
    threshold called every class off the object; against the model's own baseline, none is."""
    samples = frame({0: -0.1, 1: -0.1, 2: -0.1})
    blind = samples.drop(columns=["pred_swapped", "donor_label", "pred_background_only"])
    results = class_results(blind, NAMES, ["gradcam"], DetectConfig())
    assert [r.status for r in results] == ["pass"] * 3
    assert all(r.metrics["gradcam"].ci_high < 0 for r in results)  # the absolute test fires
    lower = class_results(frame({0: -0.3, 1: -0.1, 2: -0.11}), NAMES, ["gradcam"], DetectConfig())
    assert [f.kind for f in lower[0].notes] == ["off_object"]  # further off than the others


def test_hijack_follow_rate_and_its_interval_by_hand():
    """challenge_frame: d's backgrounds make a's objects (20 of 20) and c's (20 of 20, c
    follows any background) called d, b's never: 40 of 60. On the neutral backgrounds (a's,
    b's, c's) the objects are called the background's class 40 of 120 times (c's)."""
    names = ["a", "b", "c", "d"]
    config = DetectConfig()
    results = class_results(challenge_frame(), names, ["gradcam"], config)
    (hijack,) = [f for f in results[3].findings if f.kind == "hijack"]
    assert (hijack.value, hijack.reference, hijack.n) == (pytest.approx(40 / 60), 40 / 120, 60)
    assert hijack.statistic == "other_objects_called_class_on_its_backgrounds"  # c's following
    assert hijack.ci == pytest.approx(newcombe((40, 60), (40, 120), 0.95))
    raw = fisher_exact([[40, 20], [40, 80]], alternative="greater").pvalue
    assert raw <= hijack.p <= 4 * raw  # BH over at most four classes
    # used though not needed: d keeps its accuracy on other backgrounds, and still warns
    assert results[3].status == "warn" and survives(results[3].behaviour, config)
    assert results[2].status == "warn"  # c loses on every background: one intervention
    assert verdict(results) == "warn"
    said = reasons(as_record(results[3].to_dict()), names, confidence=0.95)
    assert said[0].startswith("used though not needed: on this class's backgrounds the model "
                              "calls 67% of the other classes' objects")  # fmt: skip
    assert not [f for r in results[:3] for f in r.findings if f.kind == "hijack"]


def test_a_hijack_is_held_against_objects_called_this_class_on_any_background():
    """b's pasted objects are called d on every background (the model's default for them,
    not a pull of d's backgrounds), and c no longer follows backgrounds: on d's backgrounds
    40 of 60 objects are called d (a's and b's), on the neutral ones 40 of 120 are called d
    and none their background's class. The reference is the higher count, 40 of 120."""
    names = ["a", "b", "c", "d"]
    samples = challenge_frame()
    samples.loc[samples["label"] == 1, "pred_swapped"] = 3
    samples.loc[samples["label"] == 2, "pred_swapped"] = 2
    results = class_results(samples, names, ["gradcam"], DetectConfig())
    (hijack,) = [f for f in results[3].findings if f.kind == "hijack"]
    assert hijack.statistic == "other_objects_called_class_on_its_backgrounds_more_than_on_others"
    assert (hijack.value, hijack.reference, hijack.n) == (pytest.approx(40 / 60), 40 / 120, 60)
    assert hijack.ci == pytest.approx(newcombe((40, 60), (40, 120), 0.95))
    said = reasons(as_record(results[3].to_dict()), names, confidence=0.95)
    assert "against 33% called by this class's name anyway on backgrounds that" in said[0]
    # without b's default the neutral backgrounds call nothing d: the same follow rate is
    # held against 0 of 120, a larger lift
    samples.loc[samples["label"] == 1, "pred_swapped"] = 1
    samples.loc[(samples["label"] == 1) & (samples["donor_label"] == 3), "pred_swapped"] = 3
    alone = class_results(samples, names, ["gradcam"], DetectConfig())
    (held,) = [f for f in alone[3].findings if f.kind == "hijack"]
    assert held.reference == 0 and held.ci == pytest.approx(newcombe((40, 60), (0, 120), 0.95))


def test_a_hijack_with_maps_off_the_object_warns_and_never_passes():
    """The fine-tuned rung: the class's own images survive, its background alone gives it,
    its maps sit off the object, and other objects follow its backgrounds. The old rule
    flagged it (maps + one intervention); it is a warning, with the hijack first."""
    names = ["a", "b", "c", "d"]
    samples = challenge_frame()
    samples.loc[samples["label"] == 3, "chance_corrected"] = -0.2
    results = class_results(samples, names, ["gradcam"], DetectConfig())
    kinds = [f.kind for f in results[3].findings]
    assert results[3].status == "warn" and kinds[0] == "hijack" and "off_object" in kinds


def test_survival_needs_enough_swapped_images_and_a_narrow_interval():
    config = DetectConfig(min_n=20, max_survival_gap=0.25)
    ident = Identification(0.3, 0.3, 1, 1.0)

    def acts(n: int, ci: tuple[float, float]) -> BehaviourStats:
        return BehaviourStats(n, 0.9, 0.05, ci, 0.0, True, ident)

    assert survives(acts(40, (-0.05, 0.2)), config)
    assert not survives(acts(40, (0.0, 0.3)), config)  # could still lose 30 points
    assert not survives(acts(10, (-0.05, 0.2)), config)  # too few images to say
    assert not survives(None, config)  # no interventions: nothing shows survival


def test_a_background_that_alone_gives_the_class_is_a_note_when_the_class_survives():
    samples = frame({0: 0.5, 1: 0.5, 2: 0.5}, bg_only={0: 0})
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig())
    assert [r.status for r in results] == ["pass"] * 3 and verdict(results) == "pass"
    assert [f.kind for f in results[0].notes] == ["background_only"]
    said = notes(as_record(results[0].to_dict()), NAMES, confidence=0.95)
    assert said[0].startswith("with the object removed, the background alone still gives")


def test_maps_of_an_untrusted_method_are_a_note_that_names_why():
    samples = frame({0: -0.1, 1: 0.5, 2: 0.5}, bg_only={0: 0}, swap_correct={0: False})
    why = "is no more faithful than a random map (ROAD)"
    results = class_results(samples, NAMES, ["gradcam"], DetectConfig(), untrusted={"gradcam": why})
    # two interventions flag class 0 whatever the maps; the maps are not counted
    assert results[0].status == "flag" and "off_object" not in [f.kind for f in results[0].findings]
    (note,) = results[0].notes
    assert note.kind == "off_object" and note.untrusted == why
    said = notes(as_record(results[0].to_dict()), NAMES, confidence=0.95)
    assert said[0].endswith(f"(not evidence: gradcam {why})")
    one = frame({0: -0.1, 1: 0.5, 2: 0.5}, swap_correct={0: False})
    trusted = class_results(one, NAMES, ["gradcam"], DetectConfig())[0]
    untrusted = class_results(one, NAMES, ["gradcam"], DetectConfig(), untrusted={"gradcam": why})
    assert trusted.status == "flag" and untrusted[0].status == "warn"  # maps no longer count


def test_an_off_object_hotspot_is_a_note_when_the_class_survives():
    config = DetectConfig()
    result = class_results(frame({0: 0.5, 1: 0.5, 2: 0.5}), NAMES, ["gradcam"], config)[0]
    spot = Hotspot(
        method="gradcam", size=64, row=0, col=0, lift=3.0, reference=1.0, reference_class=1,
        excess=2.0, superiority=0.9, p=1e-6, n=40, n_other=80, p_adjusted=1e-5,
    )  # fmt: skip
    judged = with_hotspots(result, {"gradcam": spot}, ["gradcam"], config)
    assert judged.status == "pass" and [f.kind for f in judged.notes] == ["off_object_hotspot"]
    blind = dataclasses.replace(result, behaviour=None)
    assert with_hotspots(blind, {"gradcam": spot}, ["gradcam"], config).status == "warn"


def test_background_only_needs_its_lift_at_the_lower_end_of_the_newcombe_interval():
    """Photo rung, draw 1: a neutral background called cross 24 of 25 times against 18 of 25
    for triangle's (the model's default for an empty scene) is significant by Fisher
    (p = 0.024) but its lift's interval reaches below 10 points: no evidence."""
    from auditor.detect.behaviour import identification
    from auditor.detect.rule import background_identifies

    def images(own: int, other: int) -> pd.DataFrame:
        rows = [(0, 0 if i < own else 1) for i in range(25)]
        rows += [(1, 0 if i < other else 1) for i in range(25)]
        return pd.DataFrame(rows, columns=["label", "pred_background_only"])

    config = DetectConfig()
    default = identification(images(24, 18), 0, 2)
    assert default.p < 0.05 and default.lift_ci == pytest.approx(newcombe((24, 25), (18, 25), 0.95))
    assert default.lift_ci[0] < config.min_gap and not background_identifies(default, config)
    cue = identification(images(19, 1), 0, 2)
    assert cue.lift_ci[0] > config.min_gap and background_identifies(cue, config)


def test_maps_and_the_background_alone_flag_only_where_the_swap_was_measured_and_lost():
    """Background alone + maps: a flag needs the class's own images, measured on ``min_n``
    swaps, to fail other backgrounds. A subgroup of a hijacking class (17 swaps, CI up to
    35 points, ladder draw 2) cannot show it either way: a warning, not a flag."""
    from auditor.detect.decide import decide
    from auditor.detect.findings import Finding

    config = DetectConfig(min_n=20)
    ident = Identification(1.0, 0.0, 1, 1e-6)
    alone = Finding("background_only", "background_only_rate", 1.0, 0.1, 17)
    maps = Finding("off_object_vs_class", "mean_chance_corrected_minus_rest_of_class", -0.05,
                   0.5, 34, method="saliency")  # fmt: skip

    def acts(n: int, ci: tuple[float, float]) -> BehaviourStats:
        return BehaviourStats(n, 0.8, 0.18, ci, 0.0, True, ident)

    assert decide([maps], [alone], None, acts(17, (0.0, 0.35)), config, driving=1)[0] == "warn"
    assert decide([maps], [alone], None, acts(40, (0.0, 0.35)), config, driving=1)[0] == "flag"
    assert decide([maps], [alone], None, acts(40, (0.0, 0.2)), config, driving=1)[0] == "pass"


def cue_frame(n: int = 24, *, uncued_needs_background: bool = False) -> pd.DataFrame:
    """Four classes, each image swapped onto the background of one of the other three in
    turn. Classes 2 and 3 carry a cue of their own (the background alone gives them) and
    need it: on any other background their objects are called the donor's class. Classes 0
    and 1 have none; the cued classes' backgrounds take their objects over (called the
    donor's class), and on each other's backgrounds they are right, unless
    ``uncued_needs_background``: then class 0 is lost on every background, called class 1
    on the cued ones (a third class: its own loss, not a takeover)."""
    rows = []
    for label in range(4):
        for i in range(n):
            donor = [c for c in range(4) if c != label][i % 3]
            swapped = donor if label >= 2 or donor >= 2 else label
            if uncued_needs_background and label == 0:
                swapped = 1 if donor >= 2 else 3
            rows.append({
                "sample": label * 1000 + i, "label": label, "method": "gradcam", "correct": True,
                "chance_corrected": 0.5 + 0.01 * (i % 5), "skip_reason": None,
                "pred_swapped": swapped, "donor_label": donor, "pred_same_class": label,
                "pred_background_only": label if label >= 2 else i % 4,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_swaps_a_cued_class_took_over_do_not_count_against_a_class_without_a_cue():
    """Class 0 (no cue) has 8 of its 24 swaps on a neutral background (class 1's), fewer than
    min_n, so every donor counts; 16 went onto the cued classes' backgrounds and were called
    the donor's class. Before, they made a 67-point swap gap and a warning on a class that
    needs nothing; they are the cued classes' hijack (class 0's ``vulnerable`` notes)."""
    names = ["a", "b", "c", "d"]
    config = DetectConfig()
    results = class_results(cue_frame(), names, ["gradcam"], config)
    a = results[0]
    assert a.behaviour is not None and not a.behaviour.neutral_donors
    assert (a.behaviour.n, a.behaviour.taken_over, a.behaviour.swap_gap) == (8, 16, 0.0)
    assert a.status == "pass" and a.findings == []
    assert {f.reference_class for f in a.notes if f.kind == "vulnerable"} == {2, 3}
    record = as_record(a.to_dict())
    assert record.behaviour is not None and record.behaviour.taken_over == 16
    (swap,) = [r for r in _interventions(record.behaviour, set(), names, 24) if r["label"] ==
               "swap gap"]  # fmt: skip
    assert swap["detail"] == "[0.0%, 0.0%]; 16 taken over by a cued class, not counted"
    # the cued classes keep every swap: whether they need their backgrounds or the other's
    # takes them over, the swap cannot tell them apart (Waterbirds), and they still fail
    for cued in results[2:]:
        assert cued.behaviour is not None and cued.behaviour.taken_over == 0
        assert cued.behaviour.n == 24 and cued.behaviour.swap_gap == 1.0
        assert cued.status == "flag"


def test_a_class_without_a_cue_that_loses_to_a_third_class_still_warns():
    """Left out are only the swaps called the donor's class: class 0 lost on every
    background, called class 1 on the cued ones, keeps all 24 swaps and its swap gap of 1."""
    results = class_results(cue_frame(uncued_needs_background=True), ["a", "b", "c", "d"],
                            ["gradcam"], DetectConfig())  # fmt: skip
    a = results[0]
    assert a.behaviour is not None and (a.behaviour.n, a.behaviour.taken_over) == (24, 0)
    assert a.behaviour.swap_gap == 1.0 and "swap_gap" in [f.kind for f in a.findings]
    assert a.status != "pass"


def test_a_class_left_with_too_few_swaps_says_which_were_left_out():
    """No trusted method: the pass would rest on the swap alone, and 8 swaps are too few.
    The finding and the report name the 16 left out and why."""
    names = ["a", "b", "c", "d"]
    results = class_results(cue_frame(), names, ["gradcam"], DetectConfig(),
                            untrusted={"gradcam": "failed the randomisation check"})  # fmt: skip
    a = results[0]
    assert a.status == "insufficient_data"
    (missing,) = a.findings
    assert (missing.kind, missing.n, missing.taken_over) == ("no_evidence", 8, 16)
    record = as_record(a.to_dict())
    (said,) = reasons(record, names, confidence=0.95)
    assert (
        "too few of its swaps count (8): 16 more went onto backgrounds of classes with a "
        "cue of their own" in said
    )
