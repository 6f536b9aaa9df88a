"""What the rule finds, as values: a :class:`Finding` is one piece of evidence (kind,
method, statistic, CI, p, n and the threshold it was held against), a :class:`ClassResult`
a class's status with the findings that decided it, and its **notes**: findings worth
knowing that are not evidence of reliance, counted in neither the status nor the verdict.
The report turns them into sentences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from auditor.detect.behaviour import BackgroundChallenge, BehaviourStats
from auditor.detect.hijack import HijackTest
from auditor.detect.hotspot import Hotspot
from auditor.detect.stats import MethodStats
from auditor.detect.stats_util import finite

Status = Literal["pass", "warn", "flag", "insufficient_data"]
Verdict = Literal["pass", "warn", "fail"]
FindingKind = Literal[
    "too_few_images",  # fewer scored images than min_n
    "off_object",  # the label's maps sit off the object
    "off_object_after_swap",  # the maps of answers a background swap broke sit off the object
    "off_object_vs_class",  # a part's maps sit further off the object than its class's others
    "off_object_hotspot",  # one place off the object draws the class's attribution, not others'
    "swap_gap",  # moving the object onto other backgrounds costs accuracy
    "background_only",  # the background alone gives the class
    "intervention_gap",  # an extra intervention (``intervention``) costs accuracy
    "maps_missed_cue",  # both interventions show reliance; no attribution map localised it
    "vulnerable",  # another class's backgrounds take the class over
    "hijack",  # the class's backgrounds take other classes' objects over
    "no_evidence",  # no trusted method scored the class, and no intervention could show reliance
]


@dataclass(frozen=True)
class Finding:
    """One piece of evidence, as numbers: ``statistic`` of ``n`` images was ``value`` (with
    ``ci`` and ``p`` where there are any) against ``threshold``. ``reference`` is what it was
    compared with (the most similar class's background-only rate, in ``reference_class``)."""

    kind: FindingKind
    statistic: str
    value: float
    threshold: float
    n: int
    method: str | None = None
    ci: tuple[float, float] | None = None
    p: float | None = None
    effect_size: float | None = None
    reference: float | None = None
    reference_class: int | None = None
    neutral_donors: bool | None = None
    location: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1: image fractions
    follow_rate: float | None = None  # the fraction of images called ``reference_class``
    intervention: str | None = None  # the extra intervention of an ``intervention_gap``
    untrusted: str | None = None  # why the method may not drive a flag (notes only)
    taken_over: int | None = None  # swaps left out of ``n``: a donor's cue took them over

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "statistic": self.statistic,
            "value": finite(self.value),
            "ci95": None if self.ci is None else [finite(v) for v in self.ci],
            "p": None if self.p is None else finite(self.p),
            "effect_size": None if self.effect_size is None else finite(self.effect_size),
            "n": self.n,
            "threshold": self.threshold,
            "reference": None if self.reference is None else finite(self.reference),
            "reference_class": self.reference_class,
            "neutral_donors": self.neutral_donors,
            **({} if self.location is None else {"location": [round(v, 4) for v in self.location]}),
            **({} if self.follow_rate is None else {"follow_rate": finite(self.follow_rate)}),
            **({} if self.intervention is None else {"intervention": self.intervention}),
            **({} if self.untrusted is None else {"untrusted": self.untrusted}),
            **({} if self.taken_over is None else {"taken_over": self.taken_over}),
        }


@dataclass(frozen=True)
class ClassResult:
    index: int
    name: str
    n: int
    accuracy: float
    status: Status
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, MethodStats] = field(default_factory=dict)
    behaviour: BehaviourStats | None = None
    swap_metrics: dict[str, MethodStats] = field(default_factory=dict)
    challenge: BackgroundChallenge | None = None
    hotspots: dict[str, Hotspot] = field(default_factory=dict)
    notes: list[Finding] = field(default_factory=list)
    overlay: HijackTest | None = None  # the mean-background hijack test of its mean background

    @property
    def flagged(self) -> bool:
        return self.status == "flag"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "n": self.n,
            "accuracy": finite(self.accuracy),
            "status": self.status,
            "flagged": self.flagged,
            "findings": [f.to_dict() for f in self.findings],
            "notes": [f.to_dict() for f in self.notes],
            "metrics": {m: s.to_dict() for m, s in self.metrics.items()},
            "behaviour": None if self.behaviour is None else self.behaviour.to_dict(),
            "swap_metrics": {m: s.to_dict() for m, s in self.swap_metrics.items()},
            "hotspots": {m: h.to_dict() for m, h in self.hotspots.items()},
            **({} if self.overlay is None else {"overlay_hijack": self.overlay.to_dict()}),
        }
