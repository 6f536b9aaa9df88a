"""Per-class statistics of the per-sample scores: numbers only, no decision.

For each class and method: mean and median ``chance_corrected`` with a seeded bootstrap CI,
a one-sided Wilcoxon signed-rank test that the scores sit below ``max_chance_corrected``
(with Cohen's d as effect size), a one-sided Welch test that they sit below the same
method's scores of the model's other classes (the model's own baseline: a method that sits
off the object for every class says nothing about one of them), Benjamini-Hochberg
adjustment across classes, and the same summary split by correctly and wrongly classified
images. :mod:`auditor.detect.rule`
decides what they mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from auditor.config import DetectConfig
from auditor.detect.stats_util import benjamini_hochberg, bootstrap_ci, finite, welch_below

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
    vs_others: VsOthers | None = None  # against the other classes' scores of the method

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
            **({} if self.vs_others is None else {"vs_other_classes": self.vs_others.to_dict()}),
        }


@dataclass(frozen=True)
class VsOthers:
    """A class's scores against those of every other class, for one method: the difference
    of the means (class - others) with its Welch CI, Cohen's d (pooled SD), and the one-sided
    Welch p that the class's mean is lower, BH-adjusted across classes (``p_adjusted``)."""

    difference: float
    ci: tuple[float, float]
    effect_size: float
    p: float
    p_adjusted: float = float("nan")
    others: float = float("nan")  # the other classes' mean

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": finite(self.difference),
            "ci95": [finite(v) for v in self.ci],
            "effect_size": finite(self.effect_size),
            "p_adjusted": finite(self.p_adjusted),
            "others": finite(self.others),
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


def adjusted_method_stats(
    scored: pd.DataFrame,
    k: int,
    methods: Sequence[str],
    config: DetectConfig,
    column: str = "chance_corrected",
) -> list[dict[str, MethodStats]]:
    """Per class (0..k-1) and method, the statistics of ``column``, with p-values
    Benjamini-Hochberg adjusted across classes, and each class held against the others."""
    per_class = [_class_method_stats(scored, c, methods, config, column) for c in range(k)]
    return _against_others(_adjust(per_class, methods), scored, methods, config, column)


def vs_others(values: np.ndarray, others: np.ndarray, confidence: float) -> VsOthers | None:
    """``values`` (one class's finite scores) against ``others`` (the other classes'); None
    when either side has fewer than two."""
    if min(values.size, others.size) < 2:
        return None
    difference, ci, d, p = welch_below(values, others, confidence)
    return VsOthers(difference, ci, d, p, others=float(others.mean()))


def _against_others(
    per_class: list[dict[str, MethodStats]],
    scored: pd.DataFrame,
    methods: Sequence[str],
    config: DetectConfig,
    column: str,
) -> list[dict[str, MethodStats]]:
    """Each class's :class:`VsOthers` per method, BH-adjusted across classes. The maps of
    broken swaps (``swap_chance_corrected``) are held against the other classes' maps of
    broken swaps, or, when those have fewer than ``min_n``, their maps of the originals."""
    if column not in scored:
        return per_class
    for method in methods:
        rows = scored[scored["method"] == method]
        labels = rows["label"].to_numpy()
        values = rows[column].to_numpy(dtype=float)
        plain = rows["chance_corrected"].to_numpy(dtype=float)
        tests = []
        for c in range(len(per_class)):
            others = values[(labels != c) & np.isfinite(values)]
            if others.size < config.min_n:
                others = plain[(labels != c) & np.isfinite(plain)]
            own = values[(labels == c) & np.isfinite(values)]
            tests.append(vs_others(own, others, config.confidence))
        adjusted = benjamini_hochberg([t.p if t else float("nan") for t in tests])
        for stats, t, p in zip(per_class, tests, adjusted):
            if t is not None:
                stats[method] = dataclasses.replace(
                    stats[method], vs_others=dataclasses.replace(t, p_adjusted=p)
                )
    return per_class


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
