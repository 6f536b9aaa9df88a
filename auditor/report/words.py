"""Findings in words: the sentences of a class's ``reasons``, made from the findings stored in
``summary.json`` (see :class:`auditor.detect.rule.Finding`), so the statistics never write
English and the report can phrase a stored run anew."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditor.detect.hotspot import where
from auditor.report.templating import MAX_NAME, shorten

SWAPPED = "on the {n} swapped images whose prediction the swap broke, the new prediction's map: "
SALIENCY = ("off_object", "off_object_after_swap", "off_object_vs_class", "off_object_hotspot")
BEHAVIOUR = ("swap_gap", "background_only")


def reasons(c: dict[str, Any], names: Sequence[str], *, confidence: float) -> list[str]:
    """The sentences explaining a class's status, from its stored dict (``summary.json``)."""
    findings = c.get("findings", [])
    said = [sentence(f, names, confidence=confidence) for f in findings]
    kinds = {f["kind"] for f in findings}
    if c["status"] == "warn" and kinds & set(SALIENCY) and not kinds & set(BEHAVIOUR):
        unconfirmed = (
            "no intervention was run"
            if not c.get("behaviour")
            else "the interventions show no reliance on the class's own background"
        )
        said.append(f"attribution sits off the object, but {unconfirmed}")
    elif c["status"] == "warn" and kinds & set(BEHAVIOUR) and not kinds & set(SALIENCY):
        said.append("the interventions show reliance, but attribution maps do not")
    return said


def sentence(f: dict[str, Any], names: Sequence[str], *, confidence: float) -> str:
    """One finding in words."""
    kind = f["kind"]
    if kind == "too_few_images":
        return f"{f['n']} scored images, fewer than the minimum {f['threshold']:g}"
    if kind == "no_evidence":
        return no_evidence_sentence(f)
    if kind == "maps_missed_cue":
        return (
            "both interventions show reliance, which is causal evidence enough to flag; the "
            "attribution maps did not localise the cue (a finding about the methods: they "
            "missed what the model uses)"
        )
    if kind == "vulnerable":
        donor = class_name(names, f["reference_class"])
        low, high = f["ci95"]
        against = (
            "on backgrounds that identify no class"
            if f["neutral_donors"]
            else "on other backgrounds of its own class"
        )
        return (
            f"vulnerable to {donor}'s backgrounds: on them the object is called this class "
            f"{f['reference'] - f['value']:.0%} of the time, against {f['reference']:.0%} "
            f"{against} (drop {f['value']:.0%}, CI [{low:.0%}, {high:.0%}]; one-sided Fisher, "
            f"BH-adjusted p = {f['p']:.1g}); {f['follow_rate']:.0%} were called {donor}"
        )
    if kind == "off_object_hotspot":
        return hotspot_sentence(f, names)
    if kind == "off_object_vs_class":
        low, high = f["ci95"]
        rest = f["reference"]
        return (
            f"{f['method']}: the maps sit further off the object than on the rest of the "
            f"class's images: mean chance-corrected energy {rest + f['value']:+.2f} against "
            f"{rest:+.2f} (difference {f['value']:+.2f}, {confidence:.0%} CI "
            f"[{low:+.2f}, {high:+.2f}]; one-sided Welch, BH-adjusted p = {f['p']:.1g}, "
            f"d = {_signed(f['effect_size'])})"
        )
    if kind in SALIENCY:
        where = SWAPPED.format(n=f["n"]) if kind == "off_object_after_swap" else ""
        low, high = f["ci95"]
        return (
            f"{f['method']}: {where}mean chance-corrected energy {f['value']:+.2f}, "
            f"{confidence:.0%} CI [{low:+.2f}, {high:+.2f}] below {f['threshold']:+.2f} "
            f"(one-sided Wilcoxon, BH-adjusted p = {f['p']:.1g}, d = {_signed(f['effect_size'])})"
        )
    if kind == "swap_gap":
        donors = "backgrounds that identify no class" if f["neutral_donors"] else "other images"
        low, high = f["ci95"]
        return (
            f"moving the object onto {donors} costs {f['value']:.0%} accuracy "
            f"(CI [{low:.0%}, {high:.0%}])"
        )
    if kind == "background_only":
        other_name = class_name(names, f["reference_class"])
        return (
            f"with the object removed, the background alone still gives this class "
            f"{f['value']:.0%} of the time, against at most {f['reference']:.0%} for another "
            f"class's backgrounds ({other_name}; p = {f['p']:.1g})"
        )
    return f"{kind}: {f.get('statistic')} = {f.get('value')}"


def no_evidence_sentence(f: dict[str, Any]) -> str:
    """A ``no_evidence`` finding in words: which lines of evidence were missing, and why."""
    maps = (
        "no attribution method passed the trust checks (see Method)"
        if not f.get("reference")
        else "the methods that passed the trust checks scored too few of its images"
    )
    right = f.get("value")
    if not f["n"]:
        acts = "no intervention could be run on its images"
    elif right is None or right < f["threshold"]:
        shown = "n/a" if right is None else f"{right:.0%}"
        acts = (
            f"the interventions could not show reliance: the model is right on {shown} of its "
            f"{f['n']} intervened images, less than the {f['threshold']:.0%} a swap would have "
            "to take away"
        )
    else:
        acts = f"too few of its images ({f['n']}) got the interventions"
    return f"no trusted evidence either way: {maps}, and {acts}"


def hotspot_sentence(f: dict[str, Any], names: Sequence[str]) -> str:
    """An ``off_object_hotspot`` finding in words: where, how much, against whom."""
    x0, y0, x1, y1 = f["location"]
    other = f.get("reference_class")
    closest = class_name(names, other)
    return (
        f"{f['method']}: a hotspot off the object, at the {where(f['location'])} (x "
        f"{x0:.0%}-{x1:.0%}, y {y0:.0%}-{y1:.0%} of the image): on held-out images that leave "
        f"it free, it draws {f['value']:.1f} times its area's share of the attribution off the "
        f"object, against {f['reference']:.1f} on {closest}'s, the closest other class (its excess "
        f"over places as far from the object, one-sided Mann-Whitney against each other class: "
        f"BH-adjusted p = {f['p']:.1g}, P(more) = {f['effect_size']:.2f})"
    )


def _signed(value: float | None) -> str:
    return "nan" if value is None else f"{value:+.2f}"


def class_name(names: Sequence[str], index: int | None) -> str:
    """A class's name for a sentence, shortened (names come from the data)."""
    if index is None or not 0 <= index < len(names):
        return "n/a"
    return shorten(names[index], MAX_NAME)
