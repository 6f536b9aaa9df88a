"""Per-class statistics of the per-sample scores: numbers only, no decision.

For each class and method: mean and median ``chance_corrected`` with a seeded bootstrap CI,
a one-sided Wilcoxon signed-rank test that the scores sit below ``max_chance_corrected``
(with Cohen's d as effect size), Benjamini-Hochberg adjustment across classes, and the
same summary split by correctly and wrongly classified images. :mod:`auditor.detect.rule`
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
from auditor.detect.stats_util import benjamini_hochberg, bootstrap_ci, finite

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
    Benjamini-Hochberg adjusted across classes."""
    return _adjust([_class_method_stats(scored, c, methods, config, column) for c in range(k)],
                   methods)  # fmt: skip


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
