"""Findings about one class's backgrounds acting on other classes' objects: **hijack** (its
backgrounds, or its mean background, make the model call other objects by its name: a
finding of its own, "used though not needed") and **vulnerable** (another class's
backgrounds take this class's objects over: a note). The tests are
:mod:`auditor.detect.hijack`'s and :mod:`auditor.detect.overlay`'s."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pandas as pd

from auditor.config import DetectConfig
from auditor.detect.behaviour import has_behaviour
from auditor.detect.findings import Finding
from auditor.detect.hijack import HijackTest, hijack_test, vulnerability_tests
from auditor.detect.stats_util import benjamini_hochberg


def vulnerability(
    images: pd.DataFrame, k: int, neutral: Collection[int], config: DetectConfig
) -> dict[int, list[Finding]]:
    """``vulnerable`` findings (notes) by class: the donor classes on whose backgrounds a
    class loses at least ``min_gap`` accuracy (lower end of the CI) against backgrounds that
    carry no class's cue (those of the ``neutral`` classes), by a one-sided Fisher test
    BH-adjusted across every class x donor cell."""
    if not has_behaviour(images) or "pred_same_class" not in images:
        return {}
    tests = [(c, t) for c in range(k) for t in vulnerability_tests(images, c, neutral, config)]
    adjusted = benjamini_hochberg([t.p for _, t in tests])
    found: dict[int, list[Finding]] = {}
    for (c, t), p in zip(tests, adjusted):
        if p < config.q and t.drop_ci[0] > config.min_gap:
            found.setdefault(c, []).append(Finding(
                "vulnerable", "accuracy_lost_on_class_backgrounds", t.drop, config.min_gap,
                t.cell.n, ci=t.drop_ci, p=p, reference=t.reference_accuracy,
                reference_class=t.donor, neutral_donors=t.reference == "neutral",
                follow_rate=t.cell.called_donor / t.cell.n,
            ))  # fmt: skip
    return found


def hijack_findings(
    images: pd.DataFrame,
    k: int,
    neutral: Collection[int],
    config: DetectConfig,
    overlays: Sequence[HijackTest] = (),
) -> dict[int, Finding]:
    """``hijack`` findings by class: the classes whose backgrounds (pasted behind other
    classes' objects, :func:`hijack_test`) or mean backgrounds (drawn over them, the
    ``overlays`` tests) make the model call other classes' objects by their name at least
    ``min_gap`` more often (lower end of the Newcombe CI) than backgrounds that carry no
    class's cue, by one-sided Fisher tests BH-adjusted across classes and both views. A
    class found by both keeps the swap's (its real backgrounds: the more direct statement).
    ``value``: the follow rate; ``reference``: the rate on the reference backgrounds, the
    one the statistic names (:data:`~auditor.detect.hijack.HIJACK_STATISTICS`)."""
    tests = [t for c in range(k) if (t := hijack_test(images, c, neutral, config)) is not None]
    tests += overlays
    adjusted = benjamini_hochberg([t.p for t in tests])
    found = [(p, t) for t, p in zip(tests, adjusted) if p < config.q and t.ci[0] > config.min_gap]
    found.sort(key=lambda pair: pair[1].view == "swap")  # a class found by both keeps the swap's
    return {
        t.donor: Finding(
            "hijack", t.statistic, t.follow_rate, config.min_gap, t.n, ci=t.ci, p=p,
            reference=t.reference_rate, neutral_donors=t.reference == "neutral",
            follow_rate=t.follow_rate,
        )
        for p, t in found
    }  # fmt: skip
