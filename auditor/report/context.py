"""Turn an :class:`~auditor.run.AuditRun` into the plain dict the templates read.

Values are computed here; how they look is the templates' business."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from auditor.report import figures
from auditor.report.compare_report import change_rows
from auditor.report.glyphs import Fonts
from auditor.report.table import class_rows, pct, risk, signed, untrusted_notes
from auditor.report.templating import MAX_NAME, MAX_TEXT, shorten
from auditor.report.words import class_name, reasons

if TYPE_CHECKING:
    from auditor.run import AuditRun


def primary_method(summary: dict[str, Any]) -> str:
    """The method that ranks exemplars and draws the histograms (runs before it was stored:
    the first method)."""
    return str(summary.get("primary_method") or summary["methods"][0])


def summary_context(summary: dict[str, Any]) -> dict[str, Any]:
    """The verdict and the class table, from ``summary.json`` alone."""
    return {
        "verdict": summary["verdict"],
        "verdict_sentence": _verdict_sentence(summary),
        "classes": class_rows(summary, primary_method(summary)),
        "untrusted_notes": untrusted_notes(summary),
    }


MAX_SECTIONS = 30
"""Classes that get a section of their own (those not passed, highest risk first)."""
MAX_OVERVIEW = 40
"""Classes shown at a glance, highest risk first; the class table lists every class."""
MAX_ROWS = 100
"""Rows of a table that may grow with the data (skipped images, group cells, changes)."""
MAX_NAMED = 10
"""Names a sentence lists before it says how many more there are."""
MAX_BARS = 30
"""Bars of a group chart (the worst cells)."""


def report_context(run: AuditRun) -> dict[str, Any]:
    """What the report template reads. Its size is bounded whatever the number of classes,
    images or groups: every class is in the class table, but only the :data:`MAX_OVERVIEW`
    of highest risk are drawn at a glance, and the :data:`MAX_SECTIONS` of them not passed
    get a section; growing tables stop at :data:`MAX_ROWS` rows, and say so."""
    summary, info = run.summary, run.run_info
    primary = primary_method(summary)
    classes = sorted(summary["classes"], key=lambda c: risk(c, primary))
    shown = classes[:MAX_OVERVIEW]
    sectioned = [c for c in classes if c["status"] != "pass"][:MAX_SECTIONS]
    drawn = {c["name"]: c for c in [*shown, *sectioned]}
    fonts = Fonts.installed()
    figures_of = {name: _class_figures(run, c, primary, fonts) for name, c in drawn.items()}
    skipped = _skipped(run.samples)
    return {
        **summary_context(summary),
        "summary": summary,
        "info": info,
        "methods": summary["methods"],
        "primary_method": primary,
        "subgroup_method": info["config"].get("subgroup_method", primary),
        "target_layer": info.get("target_layer"),
        "detect": info["config"]["detect"],
        "trust": _trust(summary.get("trust", {})),
        "method_errors": summary.get("method_errors", {}),
        "overview": [_overview(run, c, figures_of[c["name"]], primary, sectioned) for c in shown],
        "overview_left_out": len(classes) - len(shown),
        "sections": [_class_section(run, c, figures_of[c["name"]]) for c in sectioned],
        "sections_left_out": sum(c["status"] != "pass" for c in classes) - len(sectioned),
        "since": _since(summary.get("since_previous"), fonts),
        "challenge": challenge_table(summary),
        "groups": [_group(g, fonts) for g in summary.get("groups", [])],
        "subgroups": [
            _subgroup(run, c, s, primary)
            for c, s in [
                (c, s) for c in classes for s in c.get("subgroups", []) if s["status"] != "pass"
            ][:MAX_SECTIONS]
        ],
        "notices": _notices(run) + undrawable(summary, fonts),
        "skipped": skipped[:MAX_ROWS],
        "skipped_left_out": len(skipped) - min(len(skipped), MAX_ROWS),
        "skipped_by_reason": summary["dataset"].get("skipped_by_reason", {}),
    }


MAX_TABLE_CLASSES = 12


def challenge_table(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The class x background-class table for display: every class up to
    ``MAX_TABLE_CLASSES``; beyond that the classes that are not passed and the donors their
    findings name. Cells shaded by accuracy; the vulnerable ones marked."""
    challenge = summary.get("background_challenge")
    if not challenge:
        return None
    names = challenge["classes"]
    vulnerable = {
        (c["index"], f["reference_class"])
        for c in summary["classes"]
        for f in c["findings"]
        if f["kind"] == "vulnerable"
    }
    shown = list(range(len(names)))
    if len(names) > MAX_TABLE_CLASSES:
        named = {i for pair in vulnerable for i in pair}
        named |= {c["index"] for c in summary["classes"] if c["status"] in ("flag", "warn")}
        shown = sorted(named)[:MAX_TABLE_CLASSES]
    by_index = {c["index"]: c.get("background_challenge") or {} for c in summary["classes"]}

    def cell(i: int, j: int) -> dict[str, Any]:
        accuracy, n = challenge["accuracy"][i][j], challenge["n"][i][j]
        return {
            "text": f"{100 * accuracy:.0f}%" if n and accuracy is not None else "–",
            "n": n,
            "shade": None if accuracy is None else _shade(accuracy),
            "vulnerable": (i, j) in vulnerable,
            "title": f"{shorten(names[i], MAX_NAME)} on {shorten(names[j], MAX_NAME)}'s "
            f"backgrounds: {n} images",
        }

    rows = [
        {
            "name": names[i],
            "cells": [cell(i, j) for j in shown],
            "mixed_rand": pct(by_index.get(i, {}).get("mixed_rand_accuracy")),
            "bg_gap": _points(by_index.get(i, {}).get("bg_gap")),
        }
        for i in shown
    ]
    return {
        "mixed_same": pct(challenge["mixed_same_accuracy"]),
        "mixed_rand": pct(challenge["mixed_rand_accuracy"]),
        "bg_gap": _points(challenge["bg_gap"]),
        "columns": [names[j] for j in shown],
        "rows": rows,
        "partial": len(shown) < len(names),
        "n_classes": len(names),
        "any_vulnerable": bool(vulnerable),
    }


def _shade(accuracy: float) -> str:
    """White at 100% accuracy to red at 0%."""
    lightness = 62 + 36 * max(0.0, min(1.0, accuracy))
    return f"hsl(4, 70%, {lightness:.0f}%)"


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.0f} pts"


def _group(g: dict[str, Any], fonts: Fonts) -> dict[str, Any]:
    """One attribute's group table (worst cell first) with its bar chart and the data's bias."""
    cells = sorted(g["cells"], key=lambda c: (c["accuracy"] is None, c["accuracy"] or 0.0))
    worst = g["worst_group"]
    worst_label = None if worst is None else f"{worst['class']} · {worst['value']}"
    bars = [(f"{c['class']} · {c['value']}", c["accuracy"] or 0.0) for c in cells[:MAX_BARS]]
    association = g["association"]
    return {
        "attribute": g["attribute"],
        "worst": worst,
        "best": g["best_group"],
        "gap": pct(g["gap"]),
        "association": {
            "cramers_v": "n/a" if association["cramers_v"] is None
            else f"{association['cramers_v']:.2f}",
            "p": "n/a" if association["p"] is None else f"{association['p']:.1g}",
            "test": {"chi2": "chi-square test", "fisher": "Fisher's exact test"}.get(
                association["test"], "no test (one class or one value)"
            ),
        },
        "chart": figures.group_bars_svg(bars, worst=worst_label, title=g["attribute"],
                                        fonts=fonts),
        "cells": [
            {
                "class": c["class"], "value": c["value"], "n": c["n"],
                "accuracy": pct(c["accuracy"]), "status": c["status"],
                "chance_corrected": signed(c["chance_corrected"]),
                "swap_gap": pct(c["swap_gap"]),
            }
            for c in cells[:MAX_ROWS]
        ],
        "cells_left_out": len(cells) - min(len(cells), MAX_ROWS),
    }  # fmt: skip


def _since(since: dict[str, Any] | None, fonts: Fonts) -> dict[str, Any] | None:
    """The "Since the previous run" section: the classes whose status or numbers changed,
    and each flagged or warned class's trend over the last runs."""
    if not since:
        return None
    if since.get("error"):
        return {**since, "rows": [], "rows_left_out": 0, "unchanged": "", "trends": []}
    since = {"error": None, **since}
    rows = change_rows(since)
    moved = [r for r in rows if r["regressed"] or r["before"] != r["after"]]
    trends = list(since.get("trends", {}).items())[:MAX_NAMED]
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


def _subgroup(run: AuditRun, c: dict[str, Any], s: dict[str, Any], primary: str) -> dict[str, Any]:
    """A flagged or warned subgroup: its mean map, why, and the class's exemplars in it."""
    names = [k["name"] for k in run.summary["classes"]]
    confidence = run.run_info["config"]["detect"].get("confidence", 0.95)
    mean = run.evidence.get("subgroup_means", {}).get(f"{c['name']}/{s['subgroup']}")
    members = set(s["members"])
    evidence = run.evidence.get("classes", {}).get(c["name"], {})
    return {
        "anchor": f"subgroup-{c['index']}-{s['subgroup']}",
        "title": f"“{c['name']}”, subgroup {s['subgroup']} of {s['of']}",
        "n": s["n"],
        "class_n": c["n"],
        "class_status": c["status"],
        "accuracy": pct(s["accuracy"]),
        "status": s["status"],
        "reasons": reasons(s, names, confidence=confidence),
        "mean_map": None if mean is None else figures.heat_image(mean),
        "exemplars": [
            {
                "uri": figures.overlay(e["image"], e["maps"][primary], e["mask"]),
                "caption": f"{shorten(str(e['file_name']), MAX_NAME)} · C "
                f"{signed(e['scores'].get(primary))}",
            }
            for e in evidence.get("exemplars", [])
            if e["image_id"] in members and primary in e["maps"]
        ],
    }


def _notices(run: AuditRun) -> list[str]:
    """What a reader must know before trusting the rest of the report."""
    notices = []
    dataset = run.summary["dataset"]
    if dataset.get("skip_limit_exceeded"):
        notices.append(
            f"Incomplete audit: {dataset['n_skipped']} of {dataset['n_images']} images were "
            f"skipped, more than the limit of {100 * dataset['max_skipped']:.0f}% "
            "(max_skipped); the audit ended with an error. See Data issues."
        )
    shared = dataset.get("shared_files") or {}
    if shared.get("n"):
        example = shared["examples"][0]
        notices.append(
            f"{shared['n']} image file(s) are listed under more than one image id, so each "
            f"was audited once per id and counts that many times (e.g. "
            f"{shorten(example['file_name'], MAX_NAME)}: ids "
            f"{shorten(', '.join(example['image_ids']), MAX_NAME)})."
        )
    history = run.summary.get("history") or {}
    if history.get("error"):
        notices.append(
            f"This run is not in the run history, and was not compared with the previous run: "
            f"{history['error']} The run itself is complete."
        )
    if not run.evidence:
        notices.append(
            "evidence.pt is missing from this run directory: this report shows no exemplar "
            "images and no mean maps."
        )
    return notices


def undrawable(summary: dict[str, Any], fonts: Fonts) -> list[str]:
    """A notice naming the names (classes, groups, the model) that hold characters no font
    on this machine can draw: the PDF prints those as empty boxes, the charts as □."""
    names = [summary["model"]["spec"], *(c["name"] for c in summary["classes"])]
    for g in summary.get("groups", []):
        names += [g["attribute"], *(str(c["value"]) for c in g["cells"])]
    lacking = {}
    for name in dict.fromkeys(names):
        if missing := fonts.missing(str(name)[:MAX_TEXT]):
            lacking[name] = missing
    if not lacking:
        return []
    examples = [f"“{shorten(str(n), 40)}” ({m[:8]})" for n, m in list(lacking.items())[:5]]
    more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
    return [
        f"{len(lacking)} name(s) hold characters that no font on the machine that rendered "
        f"this report can draw, so the PDF shows them as empty boxes and the charts as □: "
        f"{', '.join(examples)}{more}. The HTML report and summary.json hold them whole; "
        "install a font that covers them (for Chinese, Japanese and Korean, Debian's "
        "fonts-noto-cjk) and run auditor report on this folder to draw them."
    ]


def _verdict_sentence(summary: dict[str, Any]) -> str:
    flagged = summary["flagged_classes"]
    if flagged:
        return f"{len(flagged)} class(es) rely on cues outside the object: {named(flagged)}."
    groups = summary.get("flagged_groups", []) + summary.get("flagged_subgroups", [])
    if groups:
        return (
            f"No class as a whole is flagged, but {len(groups)} group(s) rely on cues outside "
            f"the object: {named(groups, sep='; ')}."
        )
    warned = [c["name"] for c in summary["classes"] if c["status"] == "warn"]
    if warned:
        return (
            f"No class is flagged, but {len(warned)} class(es) show one kind of evidence of "
            f"reliance without the other: {named(warned)}."
        )
    unjudged = [c["name"] for c in summary["classes"] if c["status"] == "insufficient_data"]
    if unjudged:
        return (
            f"No class is flagged, but {len(unjudged)} class(es) could not be judged (too few "
            f"scored images, or no trusted evidence either way): {named(unjudged)}."
        )
    return "No class relies on cues outside the object, by the evidence collected."


def named(names: list[str], *, sep: str = ", ") -> str:
    """At most :data:`MAX_NAMED` names, each shortened, then how many more there are."""
    listed = sep.join(shorten(str(n), MAX_NAME) for n in names[:MAX_NAMED])
    more = len(names) - MAX_NAMED
    return listed + (f" and {more} more (see the class table)" if more > 0 else "")


def _trust(trust: dict[str, Any]) -> dict[str, Any]:
    similarity = trust.get("randomization_similarity", {})
    return {
        "untrusted": trust.get("untrusted", {}),
        "similarity": {
            m: "undefined (constant maps)" if s is None else f"{s:+.2f}"
            for m, s in similarity.items()
        },
        "object_side": trust.get("object_side_px"),
    }


def _class_figures(run: AuditRun, c: dict[str, Any], primary: str, fonts: Fonts) -> dict[str, Any]:
    """A class's mean mask, mean map per method and histogram of C, drawn once."""
    means = run.evidence.get("classes", {}).get(c["name"], {}).get("means", {})
    samples = run.samples
    scores = samples.loc[
        (samples["label"] == c["index"]) & (samples["method"] == primary), "chance_corrected"
    ].dropna()
    threshold = run.run_info["config"]["detect"]["max_chance_corrected"]
    findings = c.get("findings", [])
    boxes = {f["method"]: f["location"] for f in findings if f["kind"] == "off_object_hotspot"}
    return {
        "mean_mask": figures.heat_image(means["mask"]) if "mask" in means else None,
        "mean_maps": [
            {"method": m, "hotspot": m in boxes,
             "uri": figures.heat_image(means[m], mask=means.get("mask"), box=boxes.get(m))}
            for m in run.summary["methods"] if m in means
        ],
        "histogram": figures.histogram_svg(
            scores.tolist(), threshold=threshold, title=f"{c['name']}: {primary}", fonts=fonts
        ) if len(scores) else None,
    }  # fmt: skip


def _overview(
    run: AuditRun,
    c: dict[str, Any],
    drawn: dict[str, Any],
    primary: str,
    sectioned: list[dict[str, Any]],
) -> dict[str, Any]:
    """Every class at a glance, whatever its status: the means, the histogram and the two
    images whose primary map sits furthest off the object, with that map."""
    evidence = run.evidence.get("classes", {}).get(c["name"], {})
    return {
        "anchor": f"overview-{c['index']}",
        "name": c["name"],
        "status": c["status"],
        "section": f"class-{c['index']}" if any(c is d for d in sectioned) else None,
        **drawn,
        "exemplars": [
            {
                "uri": figures.overlay(e["image"], e["maps"][primary], e["mask"]),
                "caption": f"{shorten(str(e['file_name']), MAX_NAME)} · C "
                f"{signed(e['scores'].get(primary))}",
            }
            for e in evidence.get("exemplars", [])[:2]
            if primary in e["maps"]
        ],
    }


def _class_section(run: AuditRun, c: dict[str, Any], drawn: dict[str, Any]) -> dict[str, Any]:
    evidence = run.evidence.get("classes", {}).get(c["name"], {})
    names = [k["name"] for k in run.summary["classes"]]
    confidence = run.run_info["config"]["detect"].get("confidence", 0.95)
    methods = run.summary["methods"]
    return {
        "anchor": f"class-{c['index']}",
        "name": c["name"],
        "status": c["status"],
        "reasons": reasons(c, names, confidence=confidence) if "findings" in c else c["reasons"],
        **drawn,
        "class_model": figures.overlay(evidence["class_model"], None, None)
        if "class_model" in evidence
        else None,
        "exemplars": [_exemplar(e, methods, names) for e in evidence.get("exemplars", [])],
        "broken_exemplars": [
            _exemplar(e, methods, names, after_swap=True)
            for e in evidence.get("broken_exemplars", [])
        ],
    }


INTERVENTIONS = {
    "swapped": "another class's background",
    "same_class": "own class's background",
    "background_only": "background only",
}


def _exemplar(
    e: dict[str, Any], methods: list[str], names: list[str], *, after_swap: bool = False
) -> dict[str, Any]:
    """One exemplar for display; ``after_swap``: a background-swapped image whose right
    answer broke, shown with the maps of its new prediction."""

    def name(index: int | None) -> str:
        return class_name(names, index)

    acts = e.get("interventions", {})
    predicted = (
        f"labelled {name(e['label'])}, predicted {name(e['prediction'])} on the swapped "
        f"background; maps of {name(e['prediction'])}"
        if after_swap
        else f"predicted {name(e['prediction'])}"
    )
    return {
        "caption": f"{shorten(str(e['file_name']), MAX_NAME)} (id "
        f"{shorten(str(e['image_id']), MAX_NAME)}), {predicted}",
        "image_caption": f"{'swapped' if after_swap else 'original'}, mask outlined",
        "interventions": [
            {
                "name": label,
                "prediction": name(acts.get(f"pred_{key}")),
                "kept": acts.get(f"pred_{key}") == e["label"],
                "probability": _probability_change(
                    acts.get("prob_label"), acts.get(f"prob_label_{key}")
                ),
            }
            for key, label in INTERVENTIONS.items()
            if acts.get(f"pred_{key}") is not None  # None: outside the intervention sample
        ],
        "original": figures.overlay(e["image"], None, e["mask"]),
        "overlays": [
            {
                "method": m,
                "uri": figures.overlay(e["image"], e["maps"][m], e["mask"]),
                "score": signed(e["scores"].get(m)),
            }
            for m in methods
            if m in e["maps"]
        ],
    }


def _probability_change(before: float | None, after: float | None) -> str:
    """``0.97 → 0.12``: the labelled class's probability on the original, then intervened."""
    if before is None or after is None or not (math.isfinite(before) and math.isfinite(after)):
        return ""
    return f"{before:.2f} → {after:.2f}"


def _skipped(samples: pd.DataFrame) -> list[dict[str, str]]:
    rows = samples[samples["skip_reason"].notna()]
    return [
        {"image_id": str(r.image_id), "file": str(r.file_name), "reason": str(r.skip_reason),
         "detail": str(r.skip_detail or "")}
        for r in rows.itertuples()
    ]  # fmt: skip
