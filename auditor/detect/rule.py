"""The class rule: per-class statistics in, findings out, and a status and notes from them
(the scale itself, flag / warn / note, is :mod:`auditor.detect.decide`).

Every threshold of :class:`~auditor.config.DetectConfig` is held against a statistic here
and nowhere else. A :class:`Finding` is a value (kind, method, statistic, CI, p, n and the
threshold it was held against); the report turns findings into sentences. The evidence:

- **attribution**: the label's maps sit off the object on the original images, further off
  than the same method's maps of the other classes; or, once the interventions show
  reliance, the maps of the predictions a background swap broke do (the wrong answers were
  read off the new background: a class recognised by the *absence* of another class's cue
  has nothing to point at on its own images; its failures do); or an off-object hotspot;
- **interventions**: the swap costs accuracy, the background alone gives the class, an
  extra intervention costs accuracy;
- **hijack**: the class's backgrounds (pasted behind other classes' objects) or its mean
  background (drawn over them: a pattern fixed to the frame, :mod:`auditor.detect.overlay`)
  make the model call other classes' objects by its name; **vulnerable** (a note): another
  class's backgrounds take this class's objects over;
- **insufficient data**: fewer than ``min_n`` scored images, or no line of evidence that
  could have shown reliance (:func:`missing_evidence`); never pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from auditor.config import DetectConfig
from auditor.detect.behaviour import (
    BehaviourStats,
    Identification,
    background_challenge,
    behaviour_stats,
    has_behaviour,
    identification,
)
from auditor.detect.decide import ATTRIBUTION_KINDS, BEHAVIOUR_KINDS, decide
from auditor.detect.findings import ClassResult, Finding, Status, Verdict
from auditor.detect.hijack import HijackTest
from auditor.detect.hotspot import Hotspot
from auditor.detect.other_backgrounds import hijack_findings, vulnerability
from auditor.detect.stats import MethodStats, adjusted_method_stats
from auditor.detect.stats_util import benjamini_hochberg, welch_below


def class_results(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    methods: Sequence[str],
    config: DetectConfig,
    *,
    untrusted: Mapping[str, str] | None = None,
    donors: Collection[int] | None = None,
    overlays: Sequence[HijackTest] = (),
) -> list[ClassResult]:
    """One result per class from the scored rows of ``samples``.

    ``untrusted`` maps methods that may not drive a flag (failed sanity, faithfulness or
    resolution checks) to the reason; their findings become notes. ``donors``: the classes
    whose backgrounds may stand in a swap, when a part of the data (a group, a subgroup) is
    judged with the donor choice made on all of it (:func:`neutral_classes`); default: chosen
    here. Only whole classes (no ``donors``) are tested for hijacks and vulnerability: a
    part's cells, one per donor class, are too small. ``overlays``: the mean-background hijack
    tests of the whole classes (:mod:`auditor.detect.overlay`; they need the model).
    """
    scored = samples[samples["skip_reason"].isna()]
    images = scored.drop_duplicates("sample")
    k = len(class_names)
    per_class = adjusted_method_stats(scored, k, methods, config, "chance_corrected")
    swap = adjusted_method_stats(scored, k, methods, config, "swap_chance_corrected")
    idents = identifications(images, k, config.confidence)
    neutral = _neutral(idents, config)
    behaviours = _behaviours(images, idents, neutral if donors is None else set(donors), config,
                             neutral_only=donors is not None)  # fmt: skip
    whole = donors is None
    vulnerable = vulnerability(images, k, neutral, config) if whole else {}
    hijacks = hijack_findings(images, k, neutral, config, overlays) if whole else {}
    overlaid = {t.donor: t for t in overlays} if whole else {}
    results = []
    for index, name in enumerate(class_names):
        own = images[images["label"] == index]
        accuracy = float(own["correct"].mean()) if len(own) else float("nan")
        acts = behaviours.get(index)
        status, findings, notes = judge(
            per_class[index], swap[index], acts, methods, config, untrusted=untrusted or {},
            hijack=hijacks.get(index),
        )  # fmt: skip
        results.append(ClassResult(
            index, name, len(own), accuracy, status, findings, per_class[index], acts, swap[index],
            background_challenge(images, index), notes=notes + vulnerable.get(index, []),
            overlay=overlaid.get(index),
        ))  # fmt: skip
    return results


def judge(
    per_method: Mapping[str, MethodStats],
    swap_per_method: Mapping[str, MethodStats],
    acts: BehaviourStats | None,
    methods: Sequence[str],
    config: DetectConfig,
    *,
    untrusted: Mapping[str, str],
    hijack: Finding | None = None,
) -> tuple[Status, list[Finding], list[Finding]]:
    """A class's status, the findings that decided it and its notes (:mod:`decide`)."""
    n = max((s.n for s in per_method.values()), default=0)
    if n < config.min_n:
        return "insufficient_data", [
            Finding("too_few_images", "n", float(n), float(config.min_n), n)
        ], []  # fmt: skip
    driving = [m for m in methods if m not in untrusted]
    maps = _off_object(per_method, methods, config, "off_object", untrusted)
    behaviour = behaviour_findings(acts, config) if acts is not None else []
    if behaviour and not [f for f in maps if f.untrusted is None]:
        maps += _off_object(swap_per_method, methods, config, "off_object_after_swap", untrusted)
    trusted = [f for f in maps if f.untrusted is None]
    distrusted = [f for f in maps if f.untrusted is not None]
    status, findings, notes = decide(
        trusted, behaviour, hijack, acts, config, driving=len(driving)
    )  # fmt: skip
    if status == "pass" and not findings:
        missing = missing_evidence(per_method, acts, driving, config)
        if missing is not None:
            return "insufficient_data", [missing], notes + distrusted
    return status, findings, notes + distrusted


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
        taken_over=acts.taken_over if acts is not None and acts.taken_over else None,
    )  # fmt: skip


def with_attribution(
    result: ClassResult, attribution: Sequence[Finding], config: DetectConfig
) -> ClassResult:
    """``result`` judged again with more attribution evidence (for a part of a class: its
    maps against the rest of the class's, :func:`off_object_vs_class`; for a class: its
    hotspots), by the same scale (:func:`~auditor.detect.decide.decide`)."""
    if result.status == "insufficient_data" or not attribution:
        return result
    known = [*result.findings, *result.notes]
    maps = [f for f in known if f.kind in ATTRIBUTION_KINDS and f.untrusted is None]
    behaviour = [f for f in known if f.kind in BEHAVIOUR_KINDS]
    hijack = next((f for f in known if f.kind == "hijack"), None)
    kept = [f for f in result.notes if f.kind not in ATTRIBUTION_KINDS | BEHAVIOUR_KINDS]
    kept += [f for f in result.notes if f.kind in ATTRIBUTION_KINDS and f.untrusted is not None]
    driving = next((f.value for f in known if f.kind == "maps_missed_cue"), 1.0)
    status, findings, notes = decide(
        [*maps, *attribution], behaviour, hijack, result.behaviour, config, driving=int(driving)
    )  # fmt: skip
    return dataclasses.replace(result, status=status, findings=findings, notes=notes + kept)


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
    judged = with_attribution(result, found, config)
    return dataclasses.replace(judged, hotspots=dict(hotspots))


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
            tests[method] = welch_below(a, b, config.confidence)
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
            ci=ident.lift_ci,
        ))  # fmt: skip
    for name, drop in acts.drops.items():
        if drop.ci[0] > config.min_gap:
            findings.append(Finding(
                "intervention_gap", f"accuracy_lost_{name}", drop.gap, config.min_gap, drop.n,
                ci=drop.ci, intervention=name,
            ))  # fmt: skip
    return findings


def background_identifies(ident: Identification, config: DetectConfig) -> bool:
    """The background alone gives the class significantly more often than the most similar
    other class's backgrounds do (one-sided Fisher, p below ``alpha``), by at least
    ``min_gap`` at the lower end of the Newcombe CI of the difference, as the swap gap and
    the hijack are held: a point estimate over 25 images is no evidence of a 10-point lift."""
    return ident.p < config.alpha and ident.lift_ci[0] > config.min_gap


def off_object(stats: MethodStats, config: DetectConfig) -> bool:
    """A method's maps sit off the object: enough images, the CI's upper end below the
    threshold, the BH-adjusted one-sided test below ``q``, and further off than the same
    method's maps of the other classes (one-sided Welch, BH-adjusted below ``q``, Cohen's d
    at most ``-min_effect_vs_others``): the model's own baseline, not only an absolute one."""
    other = stats.vs_others
    return (
        stats.n >= config.min_n
        and stats.ci_high < config.max_chance_corrected
        and stats.p_adjusted < config.q
        and other is not None
        and other.p_adjusted < config.q
        and other.effect_size <= -config.min_effect_vs_others
    )


def _off_object(
    per_method: Mapping[str, MethodStats],
    methods: Sequence[str],
    config: DetectConfig,
    kind: Literal["off_object", "off_object_after_swap"],
    untrusted: Mapping[str, str],
) -> list[Finding]:
    return [
        dataclasses.replace(_saliency_finding(kind, m, s, config), untrusted=untrusted.get(m))
        for m, s in per_method.items()
        if m in methods and off_object(s, config)
    ]


def _saliency_finding(
    kind: Literal["off_object", "off_object_after_swap"],
    method: str,
    s: MethodStats,
    config: DetectConfig,
) -> Finding:
    other = s.vs_others
    return Finding(
        kind, "mean_chance_corrected", s.mean, config.max_chance_corrected, s.n, method=method,
        ci=(s.ci_low, s.ci_high), p=s.p_adjusted, effect_size=s.effect_size,
        reference=None if other is None else other.others,
    )  # fmt: skip


def neutral_classes(samples: pd.DataFrame, k: int, config: DetectConfig) -> frozenset[int]:
    """The classes whose backgrounds alone do not identify their class: the donors whose
    backgrounds carry no other class's cue into a swap."""
    images = samples[samples["skip_reason"].isna()].drop_duplicates("sample")
    return _neutral(identifications(images, k, config.confidence), config)


def identifications(
    images: pd.DataFrame, k: int, confidence: float = 0.95
) -> dict[int, Identification]:
    """Per class, how often its background alone gives it (none without interventions)."""
    if not has_behaviour(images):
        return {}
    return {c: identification(images, c, k, confidence) for c in range(k)}


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
