"""The typed run record as pandas tables, for notebooks: what a reader sorts and filters
(one row per class) where the report gives a page to read. Read from :class:`Summary`
alone, so an old run's ``summary.json`` gives the same columns, NaN where it lacks a value."""

from __future__ import annotations

from typing import Any

import pandas as pd

from auditor.record.summary import ClassRecord, Summary, pair


def class_frame(summary: Summary) -> pd.DataFrame:
    """One row per class: ``name``, ``index``, ``status``, ``n``, ``accuracy``; per audited
    method ``C_<method>`` (mean chance-corrected energy) with its 95% CI ``C_<method>_low``
    and ``C_<method>_high``; ``swap_gap`` with ``swap_gap_low`` and ``swap_gap_high``
    (accuracy lost when the object moves onto other backgrounds); ``background_only`` (the
    rate at which the background alone still gives the class); ``findings`` (their kinds),
    ``reasons`` and ``notes`` (in words) as lists. NaN where a statistic is undefined."""
    rows = [_class_row(c, summary.methods) for c in summary.classes]
    frame = pd.DataFrame(rows, columns=_class_columns(summary.methods))
    statistics = [c for c in frame.columns if c not in _NOT_STATISTICS]
    return frame.astype({"index": int, "n": int} | dict.fromkeys(statistics, float))


_NOT_STATISTICS = ("name", "index", "status", "n", "findings", "reasons", "notes")


def _class_columns(methods: list[str]) -> list[str]:
    per_method = [f"C_{m}{end}" for m in methods for end in ("", "_low", "_high")]
    return ["name", "index", "status", "n", "accuracy", *per_method, "swap_gap",
            "swap_gap_low", "swap_gap_high", "background_only", "findings", "reasons",
            "notes"]  # fmt: skip


def _class_row(c: ClassRecord, methods: list[str]) -> list[Any]:
    b = c.behaviour
    per_method = []
    for m in methods:
        stats = c.metrics.get(m)
        per_method += [c.metric(m), *pair(None if stats is None else stats.ci95)]
    gap_low, gap_high = pair(None if b is None else b.swap_gap_ci95)
    return [
        c.name, c.index, c.status, c.n, c.accuracy, *per_method,
        None if b is None else b.swap_gap, gap_low, gap_high,
        None if b is None else b.background_only_accuracy,
        [f.kind for f in c.findings], list(c.reasons), list(c.noted),
    ]  # fmt: skip
