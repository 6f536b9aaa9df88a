"""Where a class's objects sit and how large they are, against the other classes' objects.

A model can learn "small object: class A" or "centred object: class B" as well as it learns
a background, so the probe reports per class the objects' area share of the image (mean and
quartiles) and centroid (mean, standard deviation per axis, and ``spread``: the root mean
square distance of the centroids from their mean, in shares of the image side), each beside
the same statistic of all other classes' objects pooled (``others_*``).

Warning rule (descriptive, no test; applied only with ``min_n`` images on both sides):
``small_objects`` / ``large_objects`` when the class's median area share is below
1/``size_ratio`` or above ``size_ratio`` times the others' median; ``fixed_position`` when its
spread is below ``spread_ratio`` times the others' (always in the same place, e.g. always
centred); ``offset_position`` when its mean centroid is more than ``max_offset`` of the image
side away from the others'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from auditor.detect.probe_data import ProbeConfig

GEOMETRY_FINDINGS = ("small_objects", "large_objects", "fixed_position", "offset_position")


def size_stats(areas: np.ndarray, others: np.ndarray) -> dict[str, float]:
    """areas (float[n]: area shares of the class's masks), others (float[m]) -> statistics."""
    nan = float("nan")
    if areas.size == 0:
        quartiles = [nan, nan, nan]
    else:
        quartiles = [float(q) for q in np.quantile(areas, [0.25, 0.5, 0.75])]
    return {
        "mean": float(areas.mean()) if areas.size else nan,
        "q1": quartiles[0],
        "median": quartiles[1],
        "q3": quartiles[2],
        "others_median": float(np.median(others)) if others.size else nan,
    }


def spread(centroids: np.ndarray) -> float:
    """Root mean square distance of centroids (float[n, 2]) from their mean."""
    if centroids.shape[0] == 0:
        return float("nan")
    deviations = centroids - centroids.mean(0)
    return float(np.sqrt((deviations**2).sum(1).mean()))


def position_stats(centroids: np.ndarray, others: np.ndarray) -> dict[str, float]:
    """centroids (float[n, 2]: x, y of the class's masks), others (float[m, 2]) -> statistics."""
    nan = float("nan")
    mean = centroids.mean(0) if centroids.shape[0] else np.full(2, nan)
    std = centroids.std(0) if centroids.shape[0] else np.full(2, nan)
    others_mean = others.mean(0) if others.shape[0] else np.full(2, nan)
    return {
        "x_mean": float(mean[0]),
        "y_mean": float(mean[1]),
        "x_std": float(std[0]),
        "y_std": float(std[1]),
        "spread": spread(centroids),
        "others_spread": spread(others),
        "offset": float(np.linalg.norm(mean - others_mean)),
    }


def geometry_findings(
    size: dict[str, float], position: dict[str, float], config: ProbeConfig
) -> list[str]:
    """The warning codes of the module docstring (NaN statistics never warn)."""
    findings = []
    median, others = size["median"], size["others_median"]
    if median < others / config.size_ratio:
        findings.append("small_objects")
    elif median > others * config.size_ratio:
        findings.append("large_objects")
    if position["spread"] < config.spread_ratio * position["others_spread"]:
        findings.append("fixed_position")
    if position["offset"] > config.max_offset:
        findings.append("offset_position")
    return findings
