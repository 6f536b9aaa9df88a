"""Per-class inference on ``chance_corrected`` scores: bootstrap CIs and the flag rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from auditor.config import DetectConfig
from auditor.detect.behaviour import BehaviourStats, behaviour_stats, has_behaviour, identification
from auditor.detect.stats_util import bootstrap_ci, finite

Status = Literal["pass", "warn", "flag", "insufficient_data"]


@dataclass(frozen=True)
class MethodStats:
    n: int
    mean: float
    median: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "chance_corrected": finite(self.mean),
            "median": finite(self.median),
            "ci95": [finite(self.ci_low), finite(self.ci_high)],
        }


@dataclass(frozen=True)
class ClassResult:
    index: int
    name: str
    n: int
    accuracy: float
    status: Status
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, MethodStats] = field(default_factory=dict)
    behaviour: BehaviourStats | None = None

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
            "reasons": self.reasons,
            "metrics": {m: s.to_dict() for m, s in self.metrics.items()},
            "behaviour": None if self.behaviour is None else self.behaviour.to_dict(),
        }


def method_stats(values: np.ndarray, config: DetectConfig, rng: np.random.Generator) -> MethodStats:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return MethodStats(0, float("nan"), float("nan"), float("nan"), float("nan"))
    low, high = bootstrap_ci(
        values, resamples=config.bootstrap, confidence=config.confidence, rng=rng
    )
    return MethodStats(int(values.size), float(values.mean()), float(np.median(values)), low, high)


def class_results(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    methods: Sequence[str],
    config: DetectConfig,
    *,
    driving: Sequence[str] | None = None,
) -> list[ClassResult]:
    """One result per class from the scored rows of ``samples``.

    ``driving`` lists the methods whose evidence may flag a class (default: all); the others
    are reported only.
    """
    driving = list(methods if driving is None else driving)
    scored = samples[samples["skip_reason"].isna()]
    all_images = scored.drop_duplicates("sample")
    k = len(class_names)
    idents = (
        {c: identification(all_images, c, k) for c in range(k)} if has_behaviour(all_images) else {}
    )
    neutral = {c for c, ident in idents.items() if not ident.significant(config)}
    results = []
    for index, name in enumerate(class_names):
        rows = scored[scored["label"] == index]
        rng = np.random.default_rng([config.seed, index])
        per_method = {
            m: method_stats(
                rows.loc[rows["method"] == m, "chance_corrected"].to_numpy(), config, rng
            )
            for m in methods
        }
        images = rows.drop_duplicates("sample")
        accuracy = float(images["correct"].mean()) if len(images) else float("nan")
        acts = (
            behaviour_stats(all_images, index, idents[index], neutral, config, rng)
            if idents
            else None
        )
        status, reasons = _rule(per_method, acts, driving, config, list(class_names))
        results.append(
            ClassResult(index, name, len(images), accuracy, status, reasons, per_method, acts)
        )
    return results


def _rule(
    per_method: dict[str, MethodStats],
    acts: BehaviourStats | None,
    driving: Sequence[str],
    config: DetectConfig,
    names: list[str],
) -> tuple[Status, list[str]]:
    evidence = {m: s for m, s in per_method.items() if m in driving}
    if not evidence or all(s.n < config.min_n for s in evidence.values()):
        n = max((s.n for s in evidence.values()), default=0)
        return "insufficient_data", [f"{n} scored images, fewer than the minimum {config.min_n}"]
    saliency = [
        f"{m}: mean chance-corrected energy {s.mean:+.2f}, {config.confidence:.0%} CI "
        f"[{s.ci_low:+.2f}, {s.ci_high:+.2f}] below {config.max_chance_corrected:+.2f}"
        for m, s in evidence.items()
        if s.n >= config.min_n and s.ci_high < config.max_chance_corrected
    ]
    behaviour = acts.evidence(config, names) if acts is not None else []
    if saliency and behaviour:
        return "flag", saliency + behaviour
    if saliency:
        unconfirmed = (
            "no intervention was run" if acts is None else "the interventions do not confirm it"
        )
        return "warn", [*saliency, f"attribution sits off the object, but {unconfirmed}"]
    if behaviour:
        return "warn", [*behaviour, "the interventions show reliance, but attribution maps do not"]
    return "pass", []


def verdict(results: Sequence[ClassResult]) -> Literal["pass", "warn", "fail"]:
    if any(r.status == "flag" for r in results):
        return "fail"
    if any(r.status != "pass" for r in results):
        return "warn"
    return "pass"
