"""What the command line prints after a job, as lines: the verdict and the class table of an
audit, of a data probe, and of a comparison. Renderers like the HTML ones, for a terminal:
names shortened, long lists counted, so a 1,000-class audit stays readable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.record import Summary

NAME = 40
"""The most characters of a class name in a terminal line."""


def label(name: str) -> str:
    """A class name for the terminal: at most :data:`NAME` characters."""
    return name if len(name) <= NAME else name[: NAME - 1] + "…"


def names(found: list[str], *, most: int = 10) -> str:
    """Up to ``most`` names, then how many more; "none" for none."""
    shown = ", ".join(label(n) for n in found[:most]) or "none"
    return shown + (f" and {len(found) - most} more" if len(found) > most else "")


def audit_lines(summary: Summary, out: Path) -> list[str]:
    """The verdict, the images scored and skipped, each class, groups and subgroups."""
    dataset = summary.dataset
    counts = ", ".join(f"{k} {v}" for k, v in dataset.skipped_by_reason.items())
    lines = [
        f"Verdict: {summary.verdict.upper()}  (flagged: {names(summary.flagged_classes)})",
        f"Images: {dataset.scored} scored, {dataset.n_skipped} skipped"
        + (f" ({counts})" if counts else "")
        + (f", {dataset.n_unscored} without a score (every map zero)"
           if dataset.n_unscored else ""),
    ]  # fmt: skip
    for c in summary.classes:
        cc = c.metric(summary.primary_method)
        cc_text = "n/a" if cc is None else f"{cc:+.2f}"
        lines.append(f"  {label(c.name):<16} n={c.n:<5} status={c.status:<17} "
                     f"chance-corrected={cc_text}")  # fmt: skip
    for group in summary.groups:
        worst = group.worst_group
        where = "n/a" if worst is None else (
            f"{label(worst.class_name)} where {group.attribute} = {worst.value} "
            f"({100 * (worst.accuracy or 0):.1f}%, n={worst.n})"
        )  # fmt: skip
        lines.append(f"  group {group.attribute}: worst {where}")
    if summary.flagged_groups:
        lines.append(f"Flagged groups: {names(summary.flagged_groups)}")
    if summary.flagged_subgroups:
        lines.append(f"Flagged subgroups: {names(summary.flagged_subgroups)}")
    lines.append(f"Report: {out / 'report.html'}")
    return lines


def probe_lines(summary: dict[str, Any], out: Path) -> list[str]:
    dataset = summary["dataset"]
    reasons = ", ".join(f"{k} {v}" for k, v in dataset["skipped_by_reason"].items())
    lines = [
        f"Data probe: {summary['verdict'].upper()}  (flagged: {names(summary['flagged_classes'])})",
        f"Images: {dataset['n_used']} used, {dataset['n_skipped']} skipped"
        + (f" ({reasons})" if reasons else ""),
        f"  {'class':<16} {'n':<6} {'status':<18} background-only  chance  object-only",
    ]
    for c in summary["classes"]:
        values = [c["background_only_accuracy"], c["chance"], c["object_only_accuracy"]]
        bg, chance, obj = ("n/a" if v is None else f"{v:.2f}" for v in values)
        lines.append(f"  {label(c['name']):<16} {c['n']:<6} {c['status']:<18} {bg:<16} "
                     f"{chance:<7} {obj}")  # fmt: skip
    lines.append(f"Report: {out / 'data_report.html'}")
    return lines


def compare_lines(payload: dict[str, Any], out: Path) -> list[str]:
    pairing = "paired" if payload["paired"] else "unpaired"
    lines = [f"{payload['before']['run_dir']} -> {payload['after']['run_dir']} "
             f"({pairing}, {payload['method']})"]  # fmt: skip
    for c in payload["classes"]:
        mark = "  REGRESSED" if c["regressed"] else ""
        lines.append(f"  {label(c['name']):<16} {c['status_before']:>17} -> "
                     f"{c['status_after']:<17}{mark}")  # fmt: skip
    for key, words in (("only_before", "only before"), ("only_after", "only after")):
        if payload[key]:
            lines.append(f"  {words}: {names(payload[key])}")
    lines.append(f"Comparison: {out / 'compare.html'}")
    return lines
