"""Turn an :class:`~auditor.run.AuditRun` into the plain dict the templates read.

Values are computed here; how they look is the templates' business."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from auditor.report import figures
from auditor.report.compare_report import change_rows
from auditor.report.table import class_rows, pct, risk, signed, untrusted_notes
from auditor.report.words import reasons

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


def report_context(run: AuditRun) -> dict[str, Any]:
    summary, info = run.summary, run.run_info
    primary = primary_method(summary)
    classes = sorted(summary["classes"], key=lambda c: risk(c, primary))
    figures_of = {c["name"]: _class_figures(run, c, primary) for c in classes}
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
        "overview": [_overview(run, c, figures_of[c["name"]], primary) for c in classes],
        "sections": [
            _class_section(run, c, figures_of[c["name"]]) for c in classes if c["status"] != "pass"
        ],
        "since": _since(summary.get("since_previous")),
        "challenge": challenge_table(summary),
        "groups": [_group(g) for g in summary.get("groups", [])],
        "subgroups": [
            _subgroup(run, c, s, primary)
            for c in classes
            for s in c.get("subgroups", [])
            if s["status"] != "pass"
        ],
        "notices": _notices(run),
        "skipped": _skipped(run.samples),
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
            "title": f"{names[i]} on {names[j]}'s backgrounds: {n} images",
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


def _group(g: dict[str, Any]) -> dict[str, Any]:
    """One attribute's group table (worst cell first) with its bar chart and the data's bias."""
    cells = sorted(g["cells"], key=lambda c: (c["accuracy"] is None, c["accuracy"] or 0.0))
    worst = g["worst_group"]
    worst_label = None if worst is None else f"{worst['class']} · {worst['value']}"
    bars = [(f"{c['class']} · {c['value']}", c["accuracy"] or 0.0) for c in cells]
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
        "chart": figures.group_bars_svg(bars, worst=worst_label, title=g["attribute"]),
        "cells": [
            {
                "class": c["class"], "value": c["value"], "n": c["n"],
                "accuracy": pct(c["accuracy"]), "status": c["status"],
                "chance_corrected": signed(c["chance_corrected"]),
                "swap_gap": pct(c["swap_gap"]),
            }
            for c in cells
        ],
    }  # fmt: skip


def _since(since: dict[str, Any] | None) -> dict[str, Any] | None:
    """The "Since the previous run" section: the classes whose status or numbers changed,
    and each flagged or warned class's trend over the last runs."""
    if not since:
        return None
    if since.get("error"):
        return {**since, "rows": [], "unchanged": [], "trends": []}
    since = {"error": None, **since}
    rows = change_rows(since)
    moved = [r for r in rows if r["regressed"] or r["before"] != r["after"]]
    return {
        **since,
        "rows": moved,
        "unchanged": [r["name"] for r in rows if r not in moved],
        "trends": [
            {"name": name, "runs": len(points),
             "uri": figures.trend_svg(points, title=f"{name}: mean C and swap gap")}
            for name, points in since.get("trends", {}).items()
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
                "caption": f"{e['file_name']} · C {signed(e['scores'].get(primary))}",
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
    if not run.evidence:
        notices.append(
            "evidence.pt is missing from this run directory: this report shows no exemplar "
            "images and no mean maps."
        )
    return notices


def _verdict_sentence(summary: dict[str, Any]) -> str:
    flagged = summary["flagged_classes"]
    if flagged:
        return f"{len(flagged)} class(es) rely on cues outside the object: {', '.join(flagged)}."
    groups = summary.get("flagged_groups", []) + summary.get("flagged_subgroups", [])
    if groups:
        return (
            f"No class as a whole is flagged, but {len(groups)} group(s) rely on cues outside "
            f"the object: {'; '.join(groups)}."
        )
    warned = [c["name"] for c in summary["classes"] if c["status"] == "warn"]
    if warned:
        return (
            f"No class is flagged, but {len(warned)} class(es) show one kind of evidence of "
            f"reliance without the other: {', '.join(warned)}."
        )
    unjudged = [c["name"] for c in summary["classes"] if c["status"] == "insufficient_data"]
    if unjudged:
        return (
            f"No class is flagged, but {len(unjudged)} class(es) had too few scored images to "
            f"be judged: {', '.join(unjudged)}."
        )
    return "No class relies on cues outside the object, by the evidence collected."


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


def _class_figures(run: AuditRun, c: dict[str, Any], primary: str) -> dict[str, Any]:
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
            scores.tolist(), threshold=threshold, title=f"{c['name']}: {primary}"
        ) if len(scores) else None,
    }  # fmt: skip


def _overview(
    run: AuditRun, c: dict[str, Any], drawn: dict[str, Any], primary: str
) -> dict[str, Any]:
    """Every class at a glance, whatever its status: the means, the histogram and the two
    images whose primary map sits furthest off the object, with that map."""
    evidence = run.evidence.get("classes", {}).get(c["name"], {})
    return {
        "anchor": f"overview-{c['index']}",
        "name": c["name"],
        "status": c["status"],
        "section": f"class-{c['index']}" if c["status"] != "pass" else None,
        **drawn,
        "exemplars": [
            {
                "uri": figures.overlay(e["image"], e["maps"][primary], e["mask"]),
                "caption": f"{e['file_name']} · C {signed(e['scores'].get(primary))}",
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
        return names[index] if index is not None and 0 <= index < len(names) else "n/a"

    acts = e.get("interventions", {})
    predicted = (
        f"labelled {name(e['label'])}, predicted {name(e['prediction'])} on the swapped "
        f"background; maps of {name(e['prediction'])}"
        if after_swap
        else f"predicted {name(e['prediction'])}"
    )
    return {
        "caption": f"{e['file_name']} (id {e['image_id']}), {predicted}",
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
