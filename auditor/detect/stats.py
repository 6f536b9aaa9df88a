"""Per-class inference on the per-sample scores, and the flag rule.

For each class and method: mean and median ``chance_corrected`` with a seeded bootstrap CI,
a one-sided Wilcoxon signed-rank test that the scores sit below ``max_chance_corrected``
(with Cohen's d as effect size), Benjamini-Hochberg adjustment across classes, and the
same summary split by correctly and wrongly classified images. Behavioural evidence comes
from :mod:`auditor.detect.behaviour`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from auditor.config import DetectConfig
from auditor.detect.behaviour import BehaviourStats, behaviour_stats, has_behaviour, identification
from auditor.detect.stats_util import benjamini_hochberg, bootstrap_ci, finite

Status = Literal["pass", "warn", "flag", "insufficient_data"]
SECONDARY = ("energy_inside", "lift", "rank_accuracy", "pointing_game", "auroc", "topk_iou")


@dataclass(frozen=True)
class MethodStats:
    n: int
    mean: float
    median: float
    ci_low: float
    ci_high: float
    p_below: float = float("nan")
    p_adjusted: float = float("nan")
    effect_size: float = float("nan")
    by_outcome: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    secondary: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "chance_corrected": finite(self.mean),
            "median": finite(self.median),
            "ci95": [finite(self.ci_low), finite(self.ci_high)],
            "p_below": finite(self.p_below),
            "p_adjusted": finite(self.p_adjusted),
            "effect_size": finite(self.effect_size),
            "by_outcome": self.by_outcome,
            "means": self.secondary,
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
    swap_metrics: dict[str, MethodStats] = field(default_factory=dict)

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
            "swap_metrics": {m: s.to_dict() for m, s in self.swap_metrics.items()},
        }


def method_stats(
    rows: pd.DataFrame,
    config: DetectConfig,
    rng: np.random.Generator,
    column: str = "chance_corrected",
) -> MethodStats:
    """Statistics of one class's rows for one method, on the scores in ``column``
    (``swap_chance_corrected``: the maps of the predictions a background swap broke)."""
    if column not in rows:
        rows = rows.assign(**{column: np.nan})
    finite_rows = rows[np.isfinite(rows[column].to_numpy(dtype=float))]
    values = finite_rows[column].to_numpy(dtype=float)
    if values.size == 0:
        nan = float("nan")
        return MethodStats(0, nan, nan, nan, nan)
    low, high = bootstrap_ci(
        values, resamples=config.bootstrap, confidence=config.confidence, rng=rng
    )
    p, d = _below(values, config.max_chance_corrected)
    return MethodStats(
        n=int(values.size),
        mean=float(values.mean()),
        median=float(np.median(values)),
        ci_low=low,
        ci_high=high,
        p_below=p,
        effect_size=d,
        by_outcome={
            name: {"n": len(part), "chance_corrected": finite(part.mean())}
            for name, part in (
                ("correct", finite_rows.loc[finite_rows["correct"].astype(bool), column]),
                ("wrong", finite_rows.loc[~finite_rows["correct"].astype(bool), column]),
            )
        },
        secondary={m: finite(rows[m].mean()) for m in SECONDARY if m in rows}
        if column == "chance_corrected"
        else {},
    )


def _below(values: np.ndarray, threshold: float) -> tuple[float, float]:
    """One-sided Wilcoxon p that the scores sit below ``threshold``, and Cohen's d."""
    shifted = values - threshold
    if values.size < 2 or np.all(shifted == 0):
        return float("nan"), float("nan")
    p = float(wilcoxon(shifted, alternative="less").pvalue)
    sd = float(values.std(ddof=1))
    return p, float(shifted.mean() / sd) if sd > 0 else float("nan")


def class_results(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    methods: Sequence[str],
    config: DetectConfig,
    *,
    untrusted: Mapping[str, str] | None = None,
) -> list[ClassResult]:
    """One result per class from the scored rows of ``samples``.

    ``untrusted`` maps methods that may not drive a flag (failed sanity or resolution
    checks) to the reason; they are still reported.
    """
    untrusted = dict(untrusted or {})
    scored = samples[samples["skip_reason"].isna()]
    images = scored.drop_duplicates("sample")

    def adjusted(column: str) -> list[dict[str, MethodStats]]:
        k = len(class_names)
        return _adjust(
            [_class_method_stats(scored, c, methods, config, column) for c in range(k)], methods
        )

    per_class, swap = adjusted("chance_corrected"), adjusted("swap_chance_corrected")
    behaviours = _behaviours(images, len(class_names), config)
    results = []
    for index, name in enumerate(class_names):
        own = images[images["label"] == index]
        accuracy = float(own["correct"].mean()) if len(own) else float("nan")
        acts = behaviours.get(index)
        driving = [m for m in methods if m not in untrusted]
        status, reasons = _rule(
            per_class[index], swap[index], acts, driving, config, list(class_names)
        )
        results.append(ClassResult(
            index, name, len(own), accuracy, status, reasons, per_class[index], acts, swap[index]
        ))  # fmt: skip
    return results


def _class_method_stats(
    scored: pd.DataFrame,
    label: int,
    methods: Sequence[str],
    config: DetectConfig,
    column: str = "chance_corrected",
) -> dict[str, MethodStats]:
    rows = scored[scored["label"] == label]
    stream = 0 if column == "chance_corrected" else 1
    return {
        m: method_stats(
            rows[rows["method"] == m],
            config,
            np.random.default_rng([config.seed, label, i, stream]),
            column,
        )
        for i, m in enumerate(methods)
    }


def _adjust(
    per_class: list[dict[str, MethodStats]], methods: Sequence[str]
) -> list[dict[str, MethodStats]]:
    """Benjamini-Hochberg across classes, separately for each method."""
    for method in methods:
        adjusted = benjamini_hochberg([c[method].p_below for c in per_class])
        for c, p in zip(per_class, adjusted):
            c[method] = dataclasses.replace(c[method], p_adjusted=p)
    return per_class


def _behaviours(images: pd.DataFrame, k: int, config: DetectConfig) -> dict[int, BehaviourStats]:
    if not has_behaviour(images):
        return {}
    idents = {c: identification(images, c, k) for c in range(k)}
    neutral = {c for c, ident in idents.items() if not ident.significant(config)}
    out = {}
    for c in range(k):
        rng = np.random.default_rng([config.seed, c, 99])
        stats = behaviour_stats(images, c, idents[c], neutral, config, rng)
        if stats is not None:
            out[c] = stats
    return out


def _rule(
    per_method: dict[str, MethodStats],
    swap_per_method: dict[str, MethodStats],
    acts: BehaviourStats | None,
    driving: Sequence[str],
    config: DetectConfig,
    names: list[str],
) -> tuple[Status, list[str]]:
    """FLAG when attribution and interventions agree, WARN when only one shows reliance.

    Attribution agrees when the label's maps sit off the object on the original images, or,
    once the interventions show reliance, when the maps of the predictions a background
    swap broke sit off the object on the swapped images: the wrong answers were read off the
    new background (a class recognised by the *absence* of another class's cue has nothing
    to point at on its own images; its failures do).
    """
    n = max((s.n for s in per_method.values()), default=0)
    if n < config.min_n:
        return "insufficient_data", [f"{n} scored images, fewer than the minimum {config.min_n}"]
    saliency = _off_object(per_method, driving, config, "")
    behaviour = acts.evidence(config, names) if acts is not None else []
    if behaviour and not saliency:
        saliency = _off_object(swap_per_method, driving, config, SWAPPED)
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


SWAPPED = "on the {n} swapped images whose prediction the swap broke, the new prediction's map: "


def _off_object(
    per_method: dict[str, MethodStats], driving: Sequence[str], config: DetectConfig, where: str
) -> list[str]:
    """A reason for each driving method whose maps sit significantly off the object."""
    return [
        f"{m}: {where.format(n=s.n)}mean chance-corrected energy {s.mean:+.2f}, "
        f"{config.confidence:.0%} CI [{s.ci_low:+.2f}, {s.ci_high:+.2f}] below "
        f"{config.max_chance_corrected:+.2f} (one-sided Wilcoxon, BH-adjusted "
        f"p = {s.p_adjusted:.1g}, d = {s.effect_size:+.2f})"
        for m, s in per_method.items()
        if m in driving
        and s.n >= config.min_n
        and s.ci_high < config.max_chance_corrected
        and s.p_adjusted < config.q
    ]


def verdict(results: Sequence[ClassResult]) -> Literal["pass", "warn", "fail"]:
    if any(r.status == "flag" for r in results):
        return "fail"
    if any(r.status != "pass" for r in results):
        return "warn"
    return "pass"
