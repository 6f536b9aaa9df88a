"""Small numeric helpers shared by the detection statistics."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import binomtest, ttest_ind


def bootstrap_ci(
    values: np.ndarray, *, resamples: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan"), float("nan")
    means = rng.choice(values, size=(resamples, values.size), replace=True).mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def finite(value: float) -> float | None:
    """A float for JSON: NaN and inf become None."""
    return float(value) if np.isfinite(value) else None


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values; NaN entries stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    finite_at = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    if finite_at.size == 0:
        return out.tolist()
    ordered = finite_at[np.argsort(p[finite_at])]
    m = ordered.size
    scaled = p[ordered] * m / np.arange(1, m + 1)
    out[ordered] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out.tolist()


def newcombe(a: tuple[int, int], b: tuple[int, int], confidence: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for the difference of two
    proportions ``a`` - ``b``, each given as (hits, n); (nan, nan) when either n is 0."""
    if a[1] == 0 or b[1] == 0:
        return float("nan"), float("nan")
    pa, pb = a[0] / a[1], b[0] / b[1]
    (la, ua), (lb, ub) = wilson(*a, confidence), wilson(*b, confidence)
    gap = pa - pb
    return gap - float(np.hypot(pa - la, ub - pb)), gap + float(np.hypot(ua - pa, pb - lb))


def wilson(hits: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion; (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    interval = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def welch_below(
    a: np.ndarray, b: np.ndarray, confidence: float
) -> tuple[float, tuple[float, float], float, float]:
    """(mean a - mean b, its Welch CI, Cohen's d with the pooled SD, one-sided p that a's
    mean is lower). Constant samples are valid here (scipy's precision warning is muted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = ttest_ind(a, b, equal_var=False, alternative="less")
        interval = ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    pooled = np.sqrt(
        ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
    )
    difference = float(a.mean() - b.mean())
    d = difference / pooled if pooled > 0 else 0.0
    p = float(result.pvalue) if np.isfinite(result.pvalue) else 1.0
    return difference, (float(interval.low), float(interval.high)), float(d), p
