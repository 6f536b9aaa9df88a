"""The class table, from ``summary.json`` alone: one row per class, with the evidence of
every method stacked in one cell (so the table fits a page at any number of methods), the
statistics that decided the status marked, and the methods that may not drive a flag marked
where they stand."""

from __future__ import annotations

import math
from typing import Any

from auditor.detect.hotspot import where
from auditor.detect.views import REGISTRY
from auditor.record import ClassRecord, Summary
from auditor.record.summary import BehaviourRecord, MetricsRecord, pair
from auditor.report.words import class_name

STATUS_ORDER = {"flag": 0, "warn": 1, "insufficient_data": 2, "pass": 3}


def class_rows(summary: Summary) -> list[dict[str, Any]]:
    """The table's rows, riskiest class first."""
    classes = sorted(summary.classes, key=lambda c: risk(c, summary.primary_method))
    return [_row(c, summary.methods, summary.untrusted, summary.names) for c in classes]


def untrusted_notes(summary: Summary) -> list[dict[str, str]]:
    """The footnotes of the table: each method that may not drive a flag, and why."""
    return [
        {"method": m, "reason": r} for m, r in summary.untrusted.items() if m in summary.methods
    ]


def risk(c: ClassRecord, primary: str) -> tuple[int, float]:
    score = c.metric(primary)
    return STATUS_ORDER.get(c.status, 9), score if score is not None else math.inf


def _row(
    c: ClassRecord, methods: list[str], untrusted: dict[str, str], names: list[str]
) -> dict[str, Any]:
    deciding = {(f.kind, f.method or f.intervention) for f in c.findings}
    return {
        "anchor": f"class-{c.index}",
        "name": c.name,
        "n": c.n,
        "accuracy": pct(c.accuracy),
        "status": c.status,
        "attribution": _attribution(c, methods, untrusted, deciding),
        "interventions": _interventions(c.behaviour, deciding, names, c.n),
    }


def _attribution(
    c: ClassRecord, methods: list[str], untrusted: dict[str, str], deciding: set[Any]
) -> list[dict[str, Any]]:
    lines = []
    for m in methods:
        lines.append(_stat_line(m, c.metrics.get(m), ("off_object", m) in deciding,
                                m in untrusted))  # fmt: skip
    for m in methods:  # shown where they decided: the maps of the answers a swap broke
        if ("off_object_after_swap", m) in deciding:
            stats = c.swap_metrics.get(m)
            label = f"{m}, answers the swap broke (n = {0 if stats is None else stats.n})"
            lines.append(_stat_line(label, stats, True, False))
    for f in c.findings:  # a small cue's place, where it decided
        if f.kind == "off_object_hotspot" and f.location is not None:
            lines.append({
                "label": f"{f.method}, hotspot at the {where(f.location)}",
                "value": f"×{f.value or 0:.1f}",
                "detail": f"vs ×{f.reference or 0:.1f}, p {f.p or 0:.1g}",
                "deciding": True, "untrusted": False,
            })  # fmt: skip
    return lines


def _stat_line(
    label: str, m: MetricsRecord | None, deciding: bool, untrusted: bool
) -> dict[str, Any]:
    low, high = pair(None if m is None else m.ci95)
    p = None if m is None else m.p_adjusted
    return {
        "label": label,
        "value": signed(None if m is None else m.chance_corrected),
        "detail": f"[{signed(low)}, {signed(high)}], p {'n/a' if p is None else f'{p:.1g}'}",
        "deciding": deciding,
        "untrusted": untrusted,
    }


LABELS = {i.name: i.label for i in REGISTRY}


def _interventions(
    b: BehaviourRecord | None, deciding: set[Any], names: list[str], n: int
) -> list[dict[str, Any]]:
    if b is None:
        return []
    low, high = pair(b.swap_gap_ci95)
    other = b.background_only_baseline_class
    intervened = n if b.intervened is None else b.intervened
    sampled = (
        [{"label": "on", "value": f"{intervened} of {n}", "detail": "images, a seeded sample",
          "deciding": False}]
        if 0 < intervened < n
        else []
    )  # fmt: skip
    return [
        {
            "label": "swap gap",
            "value": pct(b.swap_gap),
            "detail": f"[{pct(low)}, {pct(high)}]"
            + (f"; {b.taken_over} taken over by a cued class, not counted" if b.taken_over else ""),
            "deciding": ("swap_gap", None) in deciding,
        },
        {
            "label": "background alone",
            "value": pct(b.background_only_accuracy),
            "detail": f"vs {pct(b.background_only_baseline)}"
            + (f" ({class_name(names, other)})" if isinstance(other, int) else ""),
            "deciding": ("background_only", None) in deciding,
        },
        *(
            {
                "label": LABELS.get(name, name),
                "value": pct(d.gap),
                "detail": f"[{pct(pair(d.gap_ci95)[0])}, {pct(pair(d.gap_ci95)[1])}]",
                "deciding": ("intervention_gap", name) in deciding,
            }
            for name, d in (b.interventions or {}).items()
        ),
        *sampled,
    ]


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def signed(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.2f}"
