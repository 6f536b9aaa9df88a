"""The flag rule: per-class statistics in, a status and the findings that decided it out.

Every threshold of :class:`~auditor.config.DetectConfig` is held against a statistic here
and nowhere else. A :class:`Finding` is a value (kind, method, statistic, CI, p, n and the
threshold it was held against); the report turns findings into sentences.

- **flag**: attribution and interventions agree that the class relies on cues off the object,
  or both interventions do (the swap costs accuracy *and* the background alone gives the
  class): two independent interventions that agree are causal evidence, and attribution
  maps are known to miss spurious signals (Adebayo et al. 2022); the findings then say
  that the maps did not localise the cue (``maps_missed_cue``), a finding about the methods;
- **warn**: one kind of evidence without the other; or the class is **vulnerable**: robust
  to backgrounds that carry no class's cue, it loses accuracy on another class's
  backgrounds (recognised by the absence of that class's cue, or hijacked by it), a finding
  distinct from reliance on its own background;
- **insufficient data**: fewer than ``min_n`` scored images, or no line of evidence that
  could have shown reliance (:func:`missing_evidence`); never pass;
- **pass**: neither shows it.

Attribution agrees when the label's maps sit off the object on the original images, or,
once the interventions show reliance, when the maps of the predictions a background swap
broke sit off the object on the swapped images: the wrong answers were read off the new
background (a class recognised by the *absence* of another class's cue has nothing to point
at on its own images; its failures do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind

from auditor.config import DetectConfig
from auditor.detect.behaviour import (
    BehaviourStats,
    Identification,
    background_challenge,
    behaviour_stats,
    has_behaviour,
    identification,
    vulnerability_tests,
)
from auditor.detect.findings import ClassResult, Finding, Status, Verdict
from auditor.detect.hotspot import Hotspot
from auditor.detect.stats import MethodStats, adjusted_method_stats
from auditor.detect.stats_util import benjamini_hochberg
from auditor.detect.views import REGISTRY


def class_results(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    methods: Sequence[str],
    config: DetectConfig,
    *,
    untrusted: Mapping[str, str] | None = None,
    donors: Collection[int] | None = None,
) -> list[ClassResult]:
    """One result per class from the scored rows of ``samples``.

    ``untrusted`` maps methods that may not drive a flag (failed sanity or resolution
    checks) to the reason; they are still reported. ``donors``: the classes whose
    backgrounds may stand in a swap, when a part of the data (a group, a subgroup) is judged
    with the donor choice made on all of it (:func:`neutral_classes`); default: chosen here.
    Only whole classes (no ``donors``) are tested for vulnerability: a part's cells, one per
    donor class, are too small.
    """
    scored = samples[samples["skip_reason"].isna()]
    images = scored.drop_duplicates("sample")
    k = len(class_names)
    per_class = adjusted_method_stats(scored, k, methods, config, "chance_corrected")
    swap = adjusted_method_stats(scored, k, methods, config, "swap_chance_corrected")
    idents = identifications(images, k)
    neutral = _neutral(idents, config)
    behaviours = _behaviours(images, idents, neutral if donors is None else set(donors), config,
                             neutral_only=donors is not None)  # fmt: skip
    vulnerable = {} if donors is not None else vulnerability(images, k, neutral, config)
    driving = [m for m in methods if m not in (untrusted or {})]
    results = []
    for index, name in enumerate(class_names):
        own = images[images["label"] == index]
        accuracy = float(own["correct"].mean()) if len(own) else float("nan")
        acts = behaviours.get(index)
        status, findings = judge(per_class[index], swap[index], acts, driving, config)
        if vulnerable.get(index) and status != "insufficient_data":
            status, findings = (
                ("flag" if status == "flag" else "warn"),
                findings + vulnerable[index],
            )
        results.append(ClassResult(
            index, name, len(own), accuracy, status, findings, per_class[index], acts, swap[index],
            background_challenge(images, index),
        ))  # fmt: skip
    return results


def vulnerability(
    images: pd.DataFrame, k: int, neutral: Collection[int], config: DetectConfig
) -> dict[int, list[Finding]]:
    """``vulnerable`` findings by class: the donor classes on whose backgrounds a class loses
    at least ``min_gap`` accuracy (lower end of the CI) against backgrounds that carry no
    class's cue (those of the ``neutral`` classes), by a one-sided Fisher test BH-adjusted
    across every class x donor cell."""
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


def judge(
    per_method: Mapping[str, MethodStats],
    swap_per_method: Mapping[str, MethodStats],
    acts: BehaviourStats | None,
    driving: Sequence[str],
    config: DetectConfig,
) -> tuple[Status, list[Finding]]:
    """A class's status and the findings that decided it."""
    n = max((s.n for s in per_method.values()), default=0)
    if n < config.min_n:
        return "insufficient_data", [
            Finding("too_few_images", "n", float(n), float(config.min_n), n)
        ]
    saliency = _off_object(per_method, driving, config, "off_object")
    behaviour = behaviour_findings(acts, config) if acts is not None else []
    if behaviour and not saliency:
        saliency = _off_object(swap_per_method, driving, config, "off_object_after_swap")
    if saliency and behaviour:
        return "flag", saliency + behaviour
    if len(interventions_of(behaviour)) >= 2:  # two independent interventions agree
        missed = Finding("maps_missed_cue", "driving_methods", float(len(driving)), 0.0, n)
        return "flag", [*behaviour, missed]
    if saliency or behaviour:
        return "warn", saliency + behaviour
    missing = missing_evidence(per_method, acts, driving, config)
    return ("insufficient_data", [missing]) if missing is not None else ("pass", [])


def missing_evidence(
    per_method: Mapping[str, MethodStats],
    acts: BehaviourStats | None,
    driving: Sequence[str],
    config: DetectConfig,
) -> Finding | None:
    """Why a class that shows no reliance has not earned a pass, or None when it has. A
    pass needs a line of evidence that could have shown reliance: a method that passed the
    trust checks, scored on ``min_n`` images; or interventions on a class the model gets
    right often enough (at least ``min_gap`` of its intervened images) for a swap to take
    something away. A class with neither was not judged, whatever its numbers."""
    scored = [m for m in driving if m in per_method and per_method[m].n >= config.min_n]
    right = float("nan") if acts is None else acts.swap_gap + acts.accuracy_swapped
    if scored or (acts is not None and acts.n >= config.min_n and right >= config.min_gap):
        return None
    return Finding(
        "no_evidence", "accuracy_on_intervened_images", right, config.min_gap,
        0 if acts is None else acts.n, reference=float(len(driving)),
    )  # fmt: skip


ATTRIBUTION_KINDS = frozenset(
    {"off_object", "off_object_after_swap", "off_object_vs_class", "off_object_hotspot"}
)
BEHAVIOUR_KINDS = frozenset({"swap_gap", "background_only", "intervention_gap"})


def interventions_of(findings: Sequence[Finding]) -> set[str]:
    """The distinct interventions (registry names) behind behavioural ``findings``."""
    by_kind = {i.evidence: i.name for i in REGISTRY if i.core and i.evidence}
    return {f.intervention or by_kind[f.kind] for f in findings if f.kind in BEHAVIOUR_KINDS}


def with_attribution(result: ClassResult, attribution: Sequence[Finding]) -> ClassResult:
    """``result`` judged again with more attribution evidence (for a part of a class: its
    maps against the rest of the class's, :func:`off_object_vs_class`), by the same rule."""
    if result.status == "insufficient_data" or not attribution:
        return result
    findings = [*(f for f in result.findings if f.kind != "maps_missed_cue"), *attribution]
    kinds = {f.kind for f in findings}
    both = bool(kinds & ATTRIBUTION_KINDS) and bool(kinds & BEHAVIOUR_KINDS)
    return dataclasses.replace(result, status="flag" if both else "warn", findings=findings)


def with_hotspots(
    result: ClassResult,
    hotspots: Mapping[str, Hotspot],
    driving: Sequence[str],
    config: DetectConfig,
) -> ClassResult:
    """``result`` with its class's hotspots (:func:`auditor.detect.hotspot.class_hotspots`)
    attached, judged again with those of the ``driving`` methods that show one as attribution
    evidence (:func:`with_attribution`), as a mean C off the object would be."""
    found = [
        Finding(
            "off_object_hotspot", "mean_window_lift", h.lift, config.min_hotspot_superiority,
            h.n, method=m, p=h.p_adjusted, effect_size=h.superiority, reference=h.reference,
            reference_class=h.reference_class, location=h.box,
        )
        for m, h in hotspots.items()
        if m in driving and has_hotspot(h, config)
    ]  # fmt: skip
    return dataclasses.replace(with_attribution(result, found), hotspots=dict(hotspots))


def has_hotspot(h: Hotspot, config: DetectConfig) -> bool:
    """A window off the object draws more of the class's attribution than of the other
    classes': at least ``min_n`` held-out images on each side, the BH-adjusted one-sided p
    below ``q``, and a probability of superiority of at least ``min_hotspot_superiority``."""
    return (
        min(h.n, h.n_other) >= config.min_n
        and h.p_adjusted < config.q
        and h.superiority >= config.min_hotspot_superiority
    )


def off_object_vs_class(
    part: pd.DataFrame, rest: pd.DataFrame, driving: Sequence[str], config: DetectConfig
) -> list[Finding]:
    """Methods whose maps of the scored rows ``part`` sit further off the object than those
    of ``rest`` (the other images of the same class): mean ``chance_corrected`` lower by a
    one-sided Welch test, BH-adjusted across the methods, below ``q``, with Cohen's d at
    most ``-min_effect_vs_class``. Each side needs ``min_n`` images."""
    tests = {}
    for method in driving:
        a = part.loc[part["method"] == method, "chance_corrected"].dropna().to_numpy(float)
        b = rest.loc[rest["method"] == method, "chance_corrected"].dropna().to_numpy(float)
        if min(a.size, b.size) >= config.min_n:
            tests[method] = _welch_below(a, b, config.confidence)
    adjusted = benjamini_hochberg([t[3] for t in tests.values()])
    findings = []
    for (method, (difference, ci, d, _)), p in zip(tests.items(), adjusted):
        if p < config.q and d <= -config.min_effect_vs_class:
            n = int((part["method"] == method).sum())
            findings.append(Finding(
                "off_object_vs_class", "mean_chance_corrected_minus_rest_of_class", difference,
                config.min_effect_vs_class, n, method=method, ci=ci, p=p, effect_size=d,
                reference=float(rest.loc[rest["method"] == method, "chance_corrected"].mean()),
            ))  # fmt: skip
    return findings


def _welch_below(
    a: np.ndarray, b: np.ndarray, confidence: float
) -> tuple[float, tuple[float, float], float, float]:
    """(mean a - mean b, its Welch CI, Cohen's d with the pooled SD, one-sided p that a's
    mean is lower)."""
    result = ttest_ind(a, b, equal_var=False, alternative="less")
    interval = ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    pooled = np.sqrt(
        ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    )
    difference = float(a.mean() - b.mean())
    d = difference / pooled if pooled > 0 else 0.0
    p = float(result.pvalue) if np.isfinite(result.pvalue) else 1.0
    return difference, (float(interval.low), float(interval.high)), float(d), p


def behaviour_findings(acts: BehaviourStats, config: DetectConfig) -> list[Finding]:
    """Evidence from the interventions that the class relies on its background."""
    findings = []
    if acts.swap_gap_ci[0] > config.min_gap:
        findings.append(Finding(
            "swap_gap", "accuracy_lost_when_swapped", acts.swap_gap, config.min_gap, acts.n,
            ci=acts.swap_gap_ci, neutral_donors=acts.neutral_donors,
        ))  # fmt: skip
    ident = acts.background_only
    if background_identifies(ident, config):
        findings.append(Finding(
            "background_only", "background_only_rate", ident.rate, config.min_gap, acts.n,
            p=ident.p, reference=ident.baseline, reference_class=ident.baseline_class,
        ))  # fmt: skip
    for name, drop in acts.drops.items():
        if drop.ci[0] > config.min_gap:
            findings.append(Finding(
                "intervention_gap", f"accuracy_lost_{name}", drop.gap, config.min_gap, drop.n,
                ci=drop.ci, intervention=name,
            ))  # fmt: skip
    return findings


def background_identifies(ident: Identification, config: DetectConfig) -> bool:
    """The background alone gives the class significantly more often, by ``min_gap``, than
    the most similar other class's backgrounds do."""
    return ident.p < config.alpha and ident.rate - ident.baseline >= config.min_gap


def off_object(stats: MethodStats, config: DetectConfig) -> bool:
    """A method's maps sit off the object: enough images, the CI's upper end below the
    threshold, and the BH-adjusted one-sided test below ``q``."""
    return (
        stats.n >= config.min_n
        and stats.ci_high < config.max_chance_corrected
        and stats.p_adjusted < config.q
    )


def _off_object(
    per_method: Mapping[str, MethodStats],
    driving: Sequence[str],
    config: DetectConfig,
    kind: Literal["off_object", "off_object_after_swap"],
) -> list[Finding]:
    return [
        _saliency_finding(kind, m, s, config)
        for m, s in per_method.items()
        if m in driving and off_object(s, config)
    ]


def _saliency_finding(
    kind: Literal["off_object", "off_object_after_swap"],
    method: str,
    s: MethodStats,
    config: DetectConfig,
) -> Finding:
    return Finding(
        kind, "mean_chance_corrected", s.mean, config.max_chance_corrected, s.n, method=method,
        ci=(s.ci_low, s.ci_high), p=s.p_adjusted, effect_size=s.effect_size,
    )  # fmt: skip


def neutral_classes(samples: pd.DataFrame, k: int, config: DetectConfig) -> frozenset[int]:
    """The classes whose backgrounds alone do not identify their class: the donors whose
    backgrounds carry no other class's cue into a swap."""
    images = samples[samples["skip_reason"].isna()].drop_duplicates("sample")
    return _neutral(identifications(images, k), config)


def identifications(images: pd.DataFrame, k: int) -> dict[int, Identification]:
    """Per class, how often its background alone gives it (none without interventions)."""
    if not has_behaviour(images):
        return {}
    return {c: identification(images, c, k) for c in range(k)}


def _neutral(idents: Mapping[int, Identification], config: DetectConfig) -> frozenset[int]:
    """The classes whose backgrounds alone do not identify their class: the donors whose
    backgrounds carry no other class's cue into a swap. Decided here only."""
    return frozenset(c for c, ident in idents.items() if not background_identifies(ident, config))


def _behaviours(
    images: pd.DataFrame,
    idents: Mapping[int, Identification],
    donors: Collection[int],
    config: DetectConfig,
    *,
    neutral_only: bool,
) -> dict[int, BehaviourStats]:
    """Swap statistics per class, with backgrounds from the ``donors`` classes (all donors
    when too few come from them, unless ``neutral_only``)."""
    out = {}
    for c, ident in idents.items():
        rng = np.random.default_rng([config.seed, c, 99])
        stats = behaviour_stats(images, c, ident, donors, config, rng, neutral_only=neutral_only)
        if stats is not None:
            out[c] = stats
    return out


def verdict(results: Sequence[ClassResult], parts: Sequence[ClassResult] = ()) -> Verdict:
    """``fail`` when a class or a part of one (a group or subgroup) is flagged; else ``warn``
    when a class is not passed (a part that warns or lacks data is reported, not counted:
    parts are many and small); else ``pass``."""
    if any(r.status == "flag" for r in [*results, *parts]):
        return "fail"
    if any(r.status != "pass" for r in results):
        return "warn"
    return "pass"
