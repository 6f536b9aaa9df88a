"""Turn an :class:`~auditor.run.AuditRun` into the plain dict the templates read.

Values are computed here, from the typed run record (:class:`~auditor.record.Summary`); how
they look is the templates' business. The parts: the class table (:mod:`.table`), each class
(:mod:`.classes`), and the other tables (:mod:`.breakdowns`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from auditor.detect.views import REGISTRY
from auditor.record import Summary
from auditor.report.breakdowns import MAX_ROWS, challenge_table, group_table, since_previous
from auditor.report.classes import class_figures, class_section, overview, subgroup_section
from auditor.report.glyphs import Fonts
from auditor.report.table import class_rows, risk, untrusted_notes
from auditor.report.templating import MAX_NAME, MAX_TEXT, named, shorten
from auditor.report.words import phrased

if TYPE_CHECKING:
    from auditor.run import AuditRun

MAX_SECTIONS = 30
"""Classes that get a section of their own (those not passed, highest risk first)."""
MAX_OVERVIEW = 40
"""Classes shown at a glance, highest risk first; the class table lists every class."""


def summary_context(summary: Summary) -> dict[str, Any]:
    """The verdict and the class table, from ``summary.json`` alone."""
    return {
        "verdict": summary.verdict,
        "verdict_sentence": _verdict_sentence(summary),
        "classes": class_rows(summary),
        "untrusted_notes": untrusted_notes(summary),
    }


def report_context(run: AuditRun) -> dict[str, Any]:
    """What the report template reads. Its size is bounded whatever the number of classes,
    images or groups: every class is in the class table, but only the :data:`MAX_OVERVIEW`
    of highest risk are drawn at a glance, and the :data:`MAX_SECTIONS` of them not passed
    get a section; growing tables stop at :data:`MAX_ROWS` rows, and say so. The findings
    are phrased anew, so a stored run reads in this version's words."""
    info = run.run_info
    summary = phrased(run.summary, info["config"]["detect"].get("confidence", 0.95))
    primary = summary.primary_method
    classes = sorted(summary.classes, key=lambda c: risk(c, primary))
    shown = classes[:MAX_OVERVIEW]
    sectioned = [c for c in classes if c.status != "pass"][:MAX_SECTIONS]
    with_section = {c.index for c in sectioned}
    fonts = Fonts.installed()
    drawn = {c.index: class_figures(run, c, primary, fonts) for c in [*shown, *sectioned]}
    subgroups = [(c, s) for c in classes for s in c.subgroups if s.status != "pass"]
    skipped = _skipped(run.samples)
    return {
        **summary_context(summary),
        "summary": summary,
        "info": info,
        "methods": summary.methods,
        "primary_method": primary,
        "subgroup_method": info["config"].get("subgroup_method", primary),
        "target_layer": info.get("target_layer"),
        "detect": info["config"]["detect"],
        "extra_interventions": [
            i.sentence for i in REGISTRY if i.name in info["config"].get("extra_interventions", ())
        ],
        "trust": _trust(summary),
        "method_errors": summary.method_errors,
        "overview": [
            overview(run, c, drawn[c.index], primary, c.index in with_section) for c in shown
        ],
        "overview_left_out": len(classes) - len(shown),
        "sections": [class_section(run, c, drawn[c.index]) for c in sectioned],
        "sections_left_out": sum(c.status != "pass" for c in classes) - len(sectioned),
        "noted": [
            {"name": c.name, "status": c.status, "notes": c.noted}
            for c in summary.classes
            if c.noted
        ][:MAX_SECTIONS],
        "noted_left_out": max(sum(bool(c.noted) for c in summary.classes) - MAX_SECTIONS, 0),
        "since": since_previous(summary.since_previous, fonts),
        "challenge": challenge_table(summary),
        "groups": [group_table(g, fonts) for g in summary.groups],
        "subgroups": [subgroup_section(run, c, s, primary) for c, s in subgroups[:MAX_SECTIONS]],
        "notices": _notices(run) + undrawable(summary, fonts),
        "skipped": skipped[:MAX_ROWS],
        "skipped_left_out": len(skipped) - min(len(skipped), MAX_ROWS),
        "skipped_by_reason": summary.dataset.skipped_by_reason,
    }


@dataclass(frozen=True)
class Notice:
    """What a reader must know before trusting the rest of the report: its ``kind``
    (``incomplete``, ``shared_files``, ``history``, ``no_evidence``, ``undrawable``) and
    the ``text`` the report shows."""

    kind: str
    text: str


def _notices(run: AuditRun) -> list[Notice]:
    """What a reader must know before trusting the rest of the report."""
    notices = []
    dataset = run.summary.dataset
    if dataset.skip_limit_exceeded:
        notices.append(Notice(
            "incomplete",
            f"Incomplete audit: {dataset.n_skipped} of {dataset.n_images} images were "
            f"skipped, more than the limit of {100 * dataset.max_skipped:.0f}% "
            "(max_skipped); the audit ended with an error. See Data issues.",
        ))  # fmt: skip
    shared = dataset.shared_files
    if shared.n and shared.examples:
        example = shared.examples[0]
        notices.append(Notice(
            "shared_files",
            f"{shared.n} image file(s) are listed under more than one image id, so each "
            f"was audited once per id and counts that many times (e.g. "
            f"{shorten(example.file_name, MAX_NAME)}: ids "
            f"{shorten(', '.join(example.image_ids), MAX_NAME)}).",
        ))  # fmt: skip
    if run.summary.history is not None:
        notices.append(Notice(
            "history",
            f"This run is not in the run history, and was not compared with the previous run: "
            f"{run.summary.history.error} The run itself is complete.",
        ))  # fmt: skip
    if not run.evidence:
        notices.append(Notice(
            "no_evidence",
            "evidence.pt is missing from this run directory: this report shows no exemplar "
            "images and no mean maps.",
        ))  # fmt: skip
    return notices


def undrawable(summary: Summary, fonts: Fonts) -> list[Notice]:
    """A notice naming the names (classes, groups, the model) that hold characters no font
    on this machine can draw: the PDF prints those as empty boxes, the charts as □."""
    names = [summary.model.spec, *summary.names]
    for g in summary.groups:
        names += [g.attribute, *(c.value for c in g.cells)]
    lacking = {}
    for name in dict.fromkeys(names):
        if missing := fonts.missing(name[:MAX_TEXT]):
            lacking[name] = missing
    if not lacking:
        return []
    examples = [f"“{shorten(n, 40)}” ({m[:8]})" for n, m in list(lacking.items())[:5]]
    more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
    return [Notice(
        "undrawable",
        f"{len(lacking)} name(s) hold characters that no font on the machine that rendered "
        f"this report can draw, so the PDF shows them as empty boxes and the charts as □: "
        f"{', '.join(examples)}{more}. The HTML report and summary.json hold them whole; "
        "install a font that covers them (for Chinese, Japanese and Korean, Debian's "
        "fonts-noto-cjk) and run auditor report on this folder to draw them.",
    )]  # fmt: skip


def _verdict_sentence(summary: Summary) -> str:
    flagged = summary.flagged_classes
    if flagged:
        return f"{len(flagged)} class(es) rely on cues outside the object: {named(flagged)}."
    groups = summary.flagged_groups + summary.flagged_subgroups
    if groups:
        return (
            f"No class as a whole is flagged, but {len(groups)} group(s) rely on cues outside "
            f"the object: {named(groups, sep='; ')}."
        )
    warned = [c.name for c in summary.classes if c.status == "warn"]
    if warned:
        return (
            f"No class is flagged, but {len(warned)} class(es) show evidence a reviewer must "
            f"act on (one kind of evidence of reliance without the other, or backgrounds that "
            f"take other objects over): {named(warned)}."
        )
    unjudged = [c.name for c in summary.classes if c.status == "insufficient_data"]
    if unjudged:
        return (
            f"No class is flagged, but {len(unjudged)} class(es) could not be judged (too few "
            f"scored images, or no trusted evidence either way): {named(unjudged)}."
        )
    return "No class relies on cues outside the object, by the evidence collected."


def _trust(summary: Summary) -> dict[str, Any]:
    trust = summary.trust
    return {
        "untrusted": trust.untrusted,
        "similarity": {
            m: "undefined (constant maps)" if s is None else f"{s:+.2f}"
            for m, s in trust.randomization_similarity.items()
        },
        "object_side": trust.object_side_px,
        "faithfulness": {
            m: {
                "n": f.n,
                "road": _signed3(f.road),
                "random_road": _signed3(f.random_road),
                "faithful": f.faithful,
            }
            for m, f in trust.faithfulness.items()
        },
    }


def _signed3(value: float | None) -> str:
    return "n/a" if value is None else f"{round(value, 3) + 0.0:+.3f}"  # never -0.000


def _skipped(samples: pd.DataFrame) -> list[dict[str, str]]:
    rows = samples[samples["skip_reason"].notna()]
    return [
        {"image_id": str(r.image_id), "file": str(r.file_name), "reason": str(r.skip_reason),
         "detail": str(r.skip_detail or "")}
        for r in rows.itertuples()
    ]  # fmt: skip
