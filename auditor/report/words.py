"""Findings in words: the sentences of a class's ``reasons``, made from the findings stored in
``summary.json`` (see :class:`auditor.detect.rule.Finding`), so the statistics never write
English and the report can phrase a stored run anew."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from auditor.detect.hijack import hijack_view
from auditor.detect.hotspot import where
from auditor.detect.views import REGISTRY
from auditor.record import FindingRecord, Judged, Summary
from auditor.record.summary import pair
from auditor.report.templating import MAX_NAME, shorten

SWAPPED = "on the {n} swapped images whose prediction the swap broke, the new prediction's map: "
SALIENCY = ("off_object", "off_object_after_swap", "off_object_vs_class", "off_object_hotspot")
BEHAVIOUR = ("swap_gap", "background_only", "intervention_gap")


def reasons(c: Judged, names: Sequence[str], *, confidence: float) -> list[str]:
    """The sentences explaining the status of a class, a class x group cell or a subgroup,
    from its stored findings."""
    said = [sentence(f, names, confidence=confidence) for f in c.findings]
    kinds = c.kinds()
    if c.status == "warn" and kinds & set(SALIENCY) and not kinds & set(BEHAVIOUR):
        unconfirmed = (
            "no intervention was run"
            if c.behaviour is None
            else "the interventions show no reliance on the class's own background"
        )
        said.append(f"attribution sits off the object, but {unconfirmed}")
    elif c.status == "warn" and kinds & set(BEHAVIOUR) and not kinds & set(SALIENCY):
        said.append("the interventions show reliance, but attribution maps do not")
    return said


def notes(c: Judged, names: Sequence[str], *, confidence: float) -> list[str]:
    """The sentences of a class's notes: facts worth knowing that decided nothing."""
    said = []
    for f in c.notes:
        text = sentence(f, names, confidence=confidence)
        if f.untrusted:
            text += f" (not evidence: {f.method} {f.untrusted})"
        said.append(text)
    kinds = {f.kind for f in c.notes if not f.untrusted}
    if kinds & (set(SALIENCY) | {"background_only"}):
        said.append(
            "noted, not counted: the class's own images keep their accuracy on other "
            "backgrounds and its backgrounds take no other object over, so the interventions "
            "show no reliance"
        )
    return said


def phrased(summary: Summary, confidence: float) -> Summary:
    """Every class, class x group cell and subgroup of ``summary`` with its findings in
    words (``reasons``), phrased from the stored findings by this version."""

    def said(judged: Any) -> Any:
        return dataclasses.replace(
            judged,
            reasons=reasons(judged, names, confidence=confidence),
            noted=notes(judged, names, confidence=confidence),
        )

    names = summary.names
    classes = [
        dataclasses.replace(said(c), subgroups=[said(s) for s in c.subgroups])
        for c in summary.classes
    ]
    groups = [dataclasses.replace(g, cells=[said(c) for c in g.cells]) for g in summary.groups]
    return summary.replace(classes=classes, groups=groups)


def sentence(f: FindingRecord, names: Sequence[str], *, confidence: float) -> str:
    """One finding in words."""
    kind = f.kind
    if kind == "too_few_images":
        return f"{f.n} scored images, fewer than the minimum {f.threshold:g}"
    if kind == "no_evidence":
        return no_evidence_sentence(f)
    if kind == "maps_missed_cue":
        return (
            "two interventions show reliance, which is causal evidence enough to flag; the "
            "attribution maps did not localise the cue (a finding about the methods: they "
            "missed what the model uses)"
        )
    if kind == "vulnerable":
        donor = class_name(names, f.reference_class)
        low, high = _pair(f.ci95)
        against = (
            "on backgrounds that identify no class"
            if f.neutral_donors
            else "on other backgrounds of its own class"
        )
        return (
            f"vulnerable to {donor}'s backgrounds: on them the object is called this class "
            f"{_v(f.reference) - _v(f.value):.0%} of the time, against {_v(f.reference):.0%} "
            f"{against} (drop {_v(f.value):.0%}, CI [{low:.0%}, {high:.0%}]; one-sided Fisher, "
            f"BH-adjusted p = {_v(f.p):.1g}); {_v(f.follow_rate):.0%} were called {donor}"
        )
    if kind == "hijack":
        return hijack_sentence(f, confidence)
    if kind == "off_object_hotspot":
        return hotspot_sentence(f, names)
    if kind == "off_object_vs_class":
        low, high = _pair(f.ci95)
        rest = _v(f.reference)
        return (
            f"{f.method}: the maps sit further off the object than on the rest of the "
            f"class's images: mean chance-corrected energy {rest + _v(f.value):+.2f} against "
            f"{rest:+.2f} (difference {_v(f.value):+.2f}, {confidence:.0%} CI "
            f"[{low:+.2f}, {high:+.2f}]; one-sided Welch, BH-adjusted p = {_v(f.p):.1g}, "
            f"d = {_signed(f.effect_size)})"
        )
    if kind in SALIENCY:
        where = SWAPPED.format(n=f.n) if kind == "off_object_after_swap" else ""
        low, high = _pair(f.ci95)
        return (
            f"{f.method}: {where}mean chance-corrected energy {_v(f.value):+.2f}, "
            f"{confidence:.0%} CI [{low:+.2f}, {high:+.2f}] below {f.threshold:+.2f} "
            f"(one-sided Wilcoxon, BH-adjusted p = {_v(f.p):.1g}, d = {_signed(f.effect_size)})"
        )
    if kind == "swap_gap":
        donors = "backgrounds that identify no class" if f.neutral_donors else "other images"
        low, high = _pair(f.ci95)
        return (
            f"moving the object onto {donors} costs {_v(f.value):.0%} accuracy "
            f"(CI [{low:.0%}, {high:.0%}])"
        )
    if kind == "background_only":
        other_name = class_name(names, f.reference_class)
        return (
            f"with the object removed, the background alone still gives this class "
            f"{_v(f.value):.0%} of the time, against at most {_v(f.reference):.0%} for another "
            f"class's backgrounds ({other_name}; p = {_v(f.p):.1g})"
        )
    if kind == "intervention_gap":
        low, high = _pair(f.ci95)
        view = next((i.sentence for i in REGISTRY if i.name == f.intervention), f.statistic)
        return f"{view} costs {_v(f.value):.0%} accuracy (CI [{low:.0%}, {high:.0%}])"
    return f"{kind}: {f.statistic} = {f.value}"


def hijack_sentence(f: FindingRecord, confidence: float) -> str:
    """A ``hijack`` finding in words: what the model will do with this class's backgrounds
    (pasted behind other objects) or its mean background (drawn over them)."""
    low, high = _pair(f.ci95)
    view, pull = hijack_view(f.statistic) or ("swap", "background")
    called = "by this class's name anyway" if pull == "class" else "by the background's class"
    if view == "overlay":
        where = "with this class's mean background drawn over them,"
        against = "under the mean backgrounds of " + (
            "classes whose backgrounds identify no class" if f.neutral_donors else "other classes"
        )
        risk = (
            "images that carry what this class's backgrounds have in common at fixed places "
            "(a mark, a colour cast)"
        )
    else:
        where = "on this class's backgrounds"
        against = "on " + (
            "backgrounds that identify no class" if f.neutral_donors else "other backgrounds"
        )
        risk = "other objects on such backgrounds"
    return (
        f"used though not needed: {where} the model calls {_v(f.value):.0%} of the other "
        f"classes' objects (of {f.n} it got right) by this class's name, against "
        f"{_v(f.reference):.0%} called {called} {against} (lift "
        f"{_v(f.value) - _v(f.reference):.0%}, {confidence:.0%} CI [{low:.0%}, {high:.0%}]; "
        f"one-sided Fisher, BH-adjusted p = {_v(f.p):.1g}): in deployment, {risk} will be "
        "given this class"
    )


def no_evidence_sentence(f: FindingRecord) -> str:
    """A ``no_evidence`` finding in words: which lines of evidence were missing, and why."""
    maps = (
        "no attribution method passed the trust checks (see Method)"
        if not f.reference
        else "the methods that passed the trust checks scored too few of its images"
    )
    right = f.value
    if not f.n:
        acts = "no intervention could be run on its images"
    elif right is None or right < f.threshold:
        shown = "n/a" if right is None else f"{right:.0%}"
        acts = (
            f"the interventions could not show reliance: the model is right on {shown} of its "
            f"{f.n} intervened images, less than the {f.threshold:.0%} a swap would have "
            "to take away"
        )
    elif f.taken_over:
        acts = (
            f"too few of its swaps count ({f.n}): {f.taken_over} more went onto backgrounds "
            "of classes with a cue of their own, which took the object over (those classes' "
            "evidence, in this class's notes, not evidence that it needs its own background)"
        )
    else:
        acts = f"too few of its images ({f.n}) got the interventions"
    return f"no trusted evidence either way: {maps}, and {acts}"


def hotspot_sentence(f: FindingRecord, names: Sequence[str]) -> str:
    """An ``off_object_hotspot`` finding in words: where, how much, against whom."""
    x0, y0, x1, y1 = f.location or (0.0, 0.0, 0.0, 0.0)
    other = f.reference_class
    closest = class_name(names, other)
    return (
        f"{f.method}: a hotspot off the object, at the {where((x0, y0, x1, y1))} (x "
        f"{x0:.0%}-{x1:.0%}, y {y0:.0%}-{y1:.0%} of the image): on held-out images that leave "
        f"it free, it draws {_v(f.value):.1f} times its area's share of the attribution off "
        f"the object, against {_v(f.reference):.1f} on {closest}'s, the closest other class (its "
        f"excess over places as far from the object, one-sided Mann-Whitney against each other "
        f"class: BH-adjusted p = {_v(f.p):.1g}, P(more) = {_v(f.effect_size):.2f})"
    )


def _v(value: float | None) -> float:
    """A stored statistic for a sentence: NaN where it was undefined (stored as null)."""
    return math.nan if value is None else value


def _pair(values: list[float | None] | None) -> tuple[float, float]:
    low, high = pair(values)
    return _v(low), _v(high)


def _signed(value: float | None) -> str:
    return "nan" if value is None else f"{value:+.2f}"


def class_name(names: Sequence[str], index: int | None) -> str:
    """A class's name for a sentence, shortened (names come from the data)."""
    if index is None or not 0 <= index < len(names):
        return "n/a"
    return shorten(names[index], MAX_NAME)
