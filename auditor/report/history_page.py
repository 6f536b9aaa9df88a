"""The run browser's page (``auditor history --html``): every audit in the history by name,
its runs with verdict and date, each class's status over the runs, and trend charts of mean C
and the swap gap. Rendered from plain rows (:class:`AuditRows`) that the runner gathers, so
the page is a pure function of them: self-contained (pictures as ``data:`` URIs, no script,
no external reference) and autoescaped like every report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from auditor.report import figures
from auditor.report.glyphs import Fonts
from auditor.report.templating import environment, stylesheet

MAX_CHARTS = 24
"""Trend charts an audit shows at most (its flagged and warned classes first)."""

STATUS_ORDER = {"flag": 0, "warn": 1, "insufficient_data": 2, "pass": 3}
VERDICT_BADGES = {"fail": "flag", "warn": "warn", "pass": "pass"}
"""The status colour a run's verdict is drawn in."""


@dataclass(frozen=True)
class RunRow:
    """One run of an audit as the page lists it; links are relative to the page."""

    id: int
    created: str
    model: str
    verdict: str
    flagged: list[str]
    report: str | None  # link to its report.html; None when moved, replaced or deleted
    compare: str | None = None  # link to the comparison with the audit's run before it
    compare_error: str | None = None  # why that comparison could not be made


@dataclass(frozen=True)
class AuditRows:
    """One audit (a name) and its runs, newest first. ``statuses[class][run id]`` is the
    class's status in that run; ``trends[class]`` its points, oldest first (run ``id``,
    ``status``, ``c``, ``swap_gap``), for mean C of ``method``."""

    name: str
    runs: list[RunRow]
    method: str | None
    statuses: dict[str, dict[int, str]] = field(default_factory=dict)
    trends: dict[str, list[dict]] = field(default_factory=dict)


def charted(audit: AuditRows) -> list[str]:
    """The classes whose trend is drawn: flagged and warned in the newest run first, then the
    rest by name, at most :data:`MAX_CHARTS`."""
    newest = audit.runs[0].id if audit.runs else None
    order = sorted(
        audit.trends,
        key=lambda c: (STATUS_ORDER.get(audit.statuses.get(c, {}).get(newest or -1, ""), 4), c),
    )
    return order[:MAX_CHARTS]


def render_history_page(
    audits: Sequence[AuditRows],
    *,
    source: str,
    generated: str,
    only: str | None = None,
    fonts: Fonts | None = None,
) -> str:
    """The page, as HTML text (``only``: the one audit name asked for, if any)."""
    shown: list[dict[str, Any]] = []
    for audit in audits:
        chronological = list(reversed(audit.runs))
        classes = sorted(audit.statuses, key=lambda c: c)
        grid = [
            {"name": c, "cells": [audit.statuses[c].get(r.id) for r in chronological]}
            for c in classes
        ]
        charts = [
            {
                "name": c,
                "uri": figures.trend_svg(
                    audit.trends[c], title=f"{c}: mean C ({audit.method}) and swap gap",
                    fonts=fonts,
                ),
            }
            for c in charted(audit)
            if audit.trends[c]
        ]  # fmt: skip
        shown.append({
            "name": audit.name, "anchor": f"audit-{len(shown)}", "runs": audit.runs,
            "latest": audit.runs[0] if audit.runs else None, "chronological": chronological,
            "grid": grid, "charts": charts, "method": audit.method,
            "charts_left_out": max(len(audit.trends) - MAX_CHARTS, 0),
        })  # fmt: skip
    template = environment().get_template("history.html.j2")
    return template.render(
        css=stylesheet(), audits=shown, source=source, generated=generated, only=only,
        badges=VERDICT_BADGES,
        total_runs=sum(len(a.runs) for a in audits),
    )  # fmt: skip
