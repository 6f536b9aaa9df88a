"""``compare.html`` (and the audit report's "Since the previous run" rows): two runs' class
changes, from ``compare.json`` alone, self-contained and autoescaped like every report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditor.report.templating import environment, stylesheet
from auditor.rundir import atomic_write

REGRESSION_WORDS = {
    "status": "status got worse",
    "accuracy": "accuracy fell",
    "chance_corrected": "maps moved off the object",
    "swap_gap": "the swap gap grew",
}


def change_rows(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per class in both runs, regressions first, as the tables show them."""
    rows = []
    for c in payload["classes"]:
        rows.append({
            "name": c["name"], "before": c["status_before"], "after": c["status_after"],
            "accuracy": _change(c["accuracy"], percent=True),
            "c": _change(c["chance_corrected"]),
            "swap_gap": _change(c["swap_gap"], percent=True) if c["swap_gap"] else None,
            "regressed": c["regressed"],
            "why": ", ".join(REGRESSION_WORDS.get(r, r) for r in c["regressions"]),
        })  # fmt: skip
    return sorted(rows, key=lambda r: not r["regressed"])


def _change(d: Mapping[str, Any], *, percent: bool = False) -> dict[str, str]:
    def fmt(v: float | None, signed: bool = False) -> str:
        if v is None:
            return "n/a"
        if percent:
            return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}%"
        return f"{v:+.2f}"

    low, high = d["ci95"]
    return {
        "before": fmt(d["before"]), "after": fmt(d["after"]),
        "change": fmt(d["change"], True) + (" pts" if percent and d["change"] is not None else ""),
        "ci": f"[{fmt(low, True)}, {fmt(high, True)}]",
    }  # fmt: skip


def render_compare_html(payload: Mapping[str, Any]) -> str:
    template = environment().get_template("compare.html.j2")
    return template.render(
        css=stylesheet(), p=payload, rows=change_rows(payload),
        regressed=payload["regressed_classes"],
    )  # fmt: skip


def write_compare_reports(payload: Mapping[str, Any], out: Path) -> None:
    atomic_write(out / "compare.html", render_compare_html(payload).encode("utf-8"))
