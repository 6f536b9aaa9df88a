"""The scale of findings: which evidence decides a status, and which is only worth knowing.

A class's evidence comes in kinds (:mod:`auditor.detect.rule` computes it): **attribution**
(its maps sit off the object, further than the other classes' maps), **own reliance** (its
objects lose accuracy when their background is swapped or changed), **background alone**
(with the object removed, the background still gives the class) and **hijack** (the class's
backgrounds move other classes' objects to it). What it decides:

- **flag** (fails the audit): reliance that interventions confirm. Two independent
  interventions agree; or own reliance and attribution agree; or the background alone gives
  the class, attribution agrees, and the class's own images, measured on ``min_n`` swaps,
  do *not* survive other backgrounds (a subgroup too small to measure warns instead).
- **warn** (a reviewer must act): one line of evidence of reliance without the other (own
  reliance alone; attribution or the background alone where the interventions could not show
  that the class survives other backgrounds); or a **hijack**: the model gives this class's
  name to other objects on its backgrounds ("used though not needed": its own images may
  survive other backgrounds, but the deployment risk is real).
- **note** (shown, never counted): attribution off the object, or the background alone
  giving the class, on a class whose own images survive other backgrounds and whose
  backgrounds take no other object over: the interventions show no reliance, so the maps or
  the background-only rate are facts about the model, not evidence against the class. Also
  ``vulnerable`` (another class's backgrounds take this class's objects over: that class's
  hijack, not this one's reliance) and the off-object maps of a method that failed a trust
  check.

A class **survives** other backgrounds when the swap was measured on ``min_n`` images and
the upper end of its accuracy-lost CI is below ``max_survival_gap``: positive evidence that
the class does not need its background, not merely the absence of evidence that it does.
"""

from __future__ import annotations

from collections.abc import Sequence

from auditor.config import DetectConfig
from auditor.detect.behaviour import BehaviourStats
from auditor.detect.findings import Finding, Status
from auditor.detect.views import REGISTRY

ATTRIBUTION_KINDS = frozenset(
    {"off_object", "off_object_after_swap", "off_object_vs_class", "off_object_hotspot"}
)
BEHAVIOUR_KINDS = frozenset({"swap_gap", "background_only", "intervention_gap"})


def decide(
    attribution: Sequence[Finding],
    behaviour: Sequence[Finding],
    hijack: Finding | None,
    acts: BehaviourStats | None,
    config: DetectConfig,
    *,
    driving: int,
) -> tuple[Status, list[Finding], list[Finding]]:
    """(status, the findings that decided it, the notes) of a class with enough images, from
    its trusted ``attribution`` findings, its ``behaviour`` findings, its ``hijack`` finding
    (or None) and its swap statistics ``acts`` (None: no interventions); ``driving``: how
    many methods could have given attribution evidence."""
    attribution, behaviour = list(attribution), list(behaviour)
    own = [f for f in behaviour if f.kind != "background_only"]
    alone = [f for f in behaviour if f.kind == "background_only"]
    hijacks = [hijack] if hijack is not None else []
    survived = survives(acts, config)
    failed = measured(acts, config) and not survived
    if len(interventions_of(behaviour)) >= 2:  # two independent interventions agree
        if attribution:
            return "flag", attribution + behaviour + hijacks, []
        missed = Finding("maps_missed_cue", "driving_methods", float(driving), 0.0, behaviour[0].n)
        return "flag", [*behaviour, missed, *hijacks], []
    if attribution and (own or (alone and failed)):
        return "flag", attribution + behaviour + hijacks, []
    if hijacks:
        return "warn", hijacks + behaviour + attribution, []
    if own:
        return "warn", own, []
    if survived:
        return "pass", [], attribution + alone
    if attribution or alone:
        return "warn", attribution + alone, []
    return "pass", [], []


def measured(acts: BehaviourStats | None, config: DetectConfig) -> bool:
    """The class's swap was measured on at least ``min_n`` images."""
    return acts is not None and acts.n >= config.min_n


def survives(acts: BehaviourStats | None, config: DetectConfig) -> bool:
    """The class's own images keep their accuracy on backgrounds of other classes: measured
    on at least ``min_n`` swapped images, the CI of the accuracy lost ends below
    ``max_survival_gap``."""
    return (
        acts is not None
        and measured(acts, config)
        and acts.swap_gap_ci[1] < config.max_survival_gap
    )


def interventions_of(findings: Sequence[Finding]) -> set[str]:
    """The distinct interventions (registry names) behind behavioural ``findings``."""
    by_kind = {i.evidence: i.name for i in REGISTRY if i.core and i.evidence}
    return {f.intervention or by_kind[f.kind] for f in findings if f.kind in BEHAVIOUR_KINDS}
