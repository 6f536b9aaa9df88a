"""The report's tables beyond the classes: objects on other classes' backgrounds (the
Backgrounds Challenge), the groups of ``--group-by``, and what changed since the previous
run. Every one is bounded in rows, whatever the number of classes or groups."""

from __future__ import annotations

from typing import Any

from auditor.record import Summary
from auditor.record.summary import GroupRecord
from auditor.report import figures
from auditor.report.compare_report import change_rows
from auditor.report.glyphs import Fonts
from auditor.report.table import pct, signed
from auditor.report.templating import MAX_NAME, named, shorten

MAX_TABLE_CLASSES = 12
"""Classes of the background table: beyond it, those not passed and the donors they name."""
MAX_ROWS = 100
"""Rows of a table that may grow with the data (skipped images, group cells, changes)."""
MAX_BARS = 30
"""Bars of a group chart (the worst cells)."""
MAX_TRENDS = 10


def challenge_table(summary: Summary) -> dict[str, Any] | None:
    """The class x background-class table for display: every class up to
    :data:`MAX_TABLE_CLASSES`; beyond that the classes that are not passed and the donors
    their findings name. Cells shaded by accuracy; the vulnerable ones marked."""
    challenge = summary.background_challenge
    if challenge is None:
        return None
    names = challenge.classes
    vulnerable = {
        (c.index, f.reference_class)
        for c in summary.classes
        for f in c.findings
        if f.kind == "vulnerable" and f.reference_class is not None
    }
    shown = list(range(len(names)))
    if len(names) > MAX_TABLE_CLASSES:
        chosen = {i for pair in vulnerable for i in pair}
        chosen |= {c.index for c in summary.classes if c.status in ("flag", "warn")}
        shown = sorted(chosen)[:MAX_TABLE_CLASSES]
    by_index = {c.index: c.background_challenge for c in summary.classes}

    def cell(i: int, j: int) -> dict[str, Any]:
        accuracy, n = challenge.accuracy[i][j], challenge.n[i][j]
        return {
            "text": f"{100 * accuracy:.0f}%" if n and accuracy is not None else "–",
            "n": n,
            "shade": None if accuracy is None else _shade(accuracy),
            "vulnerable": (i, j) in vulnerable,
            "title": f"{shorten(names[i], MAX_NAME)} on {shorten(names[j], MAX_NAME)}'s "
            f"backgrounds: {n} images",
        }

    def row(i: int) -> dict[str, Any]:
        own = by_index.get(i)
        return {
            "name": names[i],
            "cells": [cell(i, j) for j in shown],
            "mixed_rand": pct(None if own is None else own.mixed_rand_accuracy),
            "bg_gap": _points(None if own is None else own.bg_gap),
        }

    return {
        "mixed_same": pct(challenge.mixed_same_accuracy),
        "mixed_rand": pct(challenge.mixed_rand_accuracy),
        "bg_gap": _points(challenge.bg_gap),
        "columns": [names[j] for j in shown],
        "rows": [row(i) for i in shown],
        "partial": len(shown) < len(names),
        "n_classes": len(names),
        "any_vulnerable": bool(vulnerable),
    }


def group_table(g: GroupRecord, fonts: Fonts) -> dict[str, Any]:
    """One attribute's group table (worst cell first) with its bar chart and the data's bias."""
    cells = sorted(g.cells, key=lambda c: (c.accuracy is None, c.accuracy or 0.0))
    worst, best = g.worst_group, g.best_group
    worst_label = None if worst is None else f"{worst.class_name} · {worst.value}"
    bars = [(f"{c.class_name} · {c.value}", c.accuracy or 0.0) for c in cells[:MAX_BARS]]
    association = g.association
    return {
        "attribute": g.attribute,
        "worst": None if worst is None else _ref(worst),
        "best": None if best is None else _ref(best),
        "gap": pct(g.gap),
        "association": {
            "cramers_v": "n/a" if association.cramers_v is None
            else f"{association.cramers_v:.2f}",
            "p": "n/a" if association.p is None else f"{association.p:.1g}",
            "test": {"chi2": "chi-square test", "fisher": "Fisher's exact test"}.get(
                association.test, "no test (one class or one value)"
            ),
        },
        "chart": figures.group_bars_svg(bars, worst=worst_label, title=g.attribute,
                                        fonts=fonts),
        "cells": [
            {
                "class": c.class_name, "value": c.value, "n": c.n,
                "accuracy": pct(c.accuracy), "status": c.status,
                "chance_corrected": signed(c.chance_corrected),
                "swap_gap": pct(c.swap_gap),
            }
            for c in cells[:MAX_ROWS]
        ],
        "cells_left_out": len(cells) - min(len(cells), MAX_ROWS),
    }  # fmt: skip


def since_previous(since: dict[str, Any] | None, fonts: Fonts) -> dict[str, Any] | None:
    """The "Since the previous run" section (a comparison, as ``compare.json`` holds it):
    the classes whose status or numbers changed, and each flagged or warned class's trend."""
    if not since:
        return None
    if since.get("error"):
        return {**since, "rows": [], "rows_left_out": 0, "unchanged": "", "trends": []}
    since = {"error": None, **since}
    rows = change_rows(since)
    moved = [r for r in rows if r["regressed"] or r["before"] != r["after"]]
    trends = list(since.get("trends", {}).items())[:MAX_TRENDS]
    return {
        **since,
        "rows": moved[:MAX_ROWS],
        "rows_left_out": len(moved) - min(len(moved), MAX_ROWS),
        "unchanged": named([r["name"] for r in rows if r not in moved]),
        "trends": [
            {"name": name, "runs": len(points),
             "uri": figures.trend_svg(points, title=f"{name}: mean C and swap gap",
                                      fonts=fonts)}
            for name, points in trends
        ],
    }  # fmt: skip


def _ref(ref: Any) -> dict[str, Any]:
    return {"class": ref.class_name, "value": ref.value, "n": ref.n, "accuracy": ref.accuracy}


def _shade(accuracy: float) -> str:
    """White at 100% accuracy to red at 0%."""
    lightness = 62 + 36 * max(0.0, min(1.0, accuracy))
    return f"hsl(4, 70%, {lightness:.0f}%)"


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.0f} pts"
