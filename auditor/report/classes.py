"""A class in the report: its figures (mean mask, mean maps, histogram of C), its row at a
glance, its own section with exemplars and the answers a background swap broke, and its
subgroups' sections. Values from the typed run record and the stored evidence."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from auditor.detect.views import REGISTRY
from auditor.record import ClassRecord
from auditor.record.summary import SubgroupRecord
from auditor.report import figures
from auditor.report.glyphs import Fonts
from auditor.report.table import pct, signed
from auditor.report.templating import MAX_NAME, shorten
from auditor.report.words import class_name

if TYPE_CHECKING:
    from auditor.run import AuditRun

INTERVENTIONS = {i.name: i.label for i in REGISTRY}  # the exemplars' captions, in order


def class_figures(run: AuditRun, c: ClassRecord, primary: str, fonts: Fonts) -> dict[str, Any]:
    """A class's mean mask, mean map per method and histogram of C, drawn once."""
    means = _evidence(run, c.name).get("means", {})
    samples = run.samples
    scores = samples.loc[
        (samples["label"] == c.index) & (samples["method"] == primary), "chance_corrected"
    ].dropna()
    threshold = run.run_info["config"]["detect"]["max_chance_corrected"]
    boxes = hotspot_boxes(c)
    return {
        "mean_mask": figures.heat_image(means["mask"]) if "mask" in means else None,
        "mean_maps": [
            {"method": m, "hotspot": m in boxes,
             "uri": figures.heat_image(means[m], mask=means.get("mask"), box=boxes.get(m))}
            for m in run.summary.methods if m in means
        ],
        "histogram": figures.histogram_svg(
            scores.tolist(), threshold=threshold, title=f"{c.name}: {primary}", fonts=fonts
        ) if len(scores) else None,
    }  # fmt: skip


def hotspot_boxes(c: ClassRecord) -> dict[str | None, list[float] | None]:
    """Per method, the box of its off-object hotspot finding (fractions of the image)."""
    return {f.method: f.location for f in c.findings if f.kind == "off_object_hotspot"}


def overview(
    run: AuditRun, c: ClassRecord, drawn: dict[str, Any], primary: str, sectioned: bool
) -> dict[str, Any]:
    """A class at a glance, whatever its status: the means, the histogram and the two
    images whose primary map sits furthest off the object, with that map."""
    return {
        "anchor": f"overview-{c.index}",
        "name": c.name,
        "status": c.status,
        "section": f"class-{c.index}" if sectioned else None,
        **drawn,
        "exemplars": [
            _thumbnail(e, primary)
            for e in _evidence(run, c.name).get("exemplars", [])[:2]
            if primary in e["maps"]
        ],
    }


def class_section(run: AuditRun, c: ClassRecord, drawn: dict[str, Any]) -> dict[str, Any]:
    evidence = _evidence(run, c.name)
    names, methods = run.summary.names, run.summary.methods
    return {
        "anchor": f"class-{c.index}",
        "name": c.name,
        "status": c.status,
        "reasons": c.reasons,
        "notes": c.noted,
        **drawn,
        "class_model": figures.overlay(evidence["class_model"], None, None)
        if "class_model" in evidence
        else None,
        **_mean_background(evidence.get("mean_background"), names, c.name),
        "exemplars": [_exemplar(e, methods, names) for e in evidence.get("exemplars", [])],
        "broken_exemplars": [
            _exemplar(e, methods, names, after_swap=True)
            for e in evidence.get("broken_exemplars", [])
        ],
    }


def _mean_background(shown: dict[str, Any] | None, names: list[str], name: str) -> dict[str, Any]:
    """The pictures of a hijack found by the class's mean background: the mean, and an image
    of another class it moved to this class, drawn over."""
    out: dict[str, Any] = dict.fromkeys(("mean_background", "drawn_over", "drawn_over_caption"))
    if not shown:
        return out
    out["mean_background"] = figures.overlay(shown["mean_background"], None, None)
    if "drawn_over" in shown:
        label = class_name(names, shown["drawn_over_label"])
        out |= {
            "drawn_over": figures.overlay(shown["drawn_over"], None, None),
            "drawn_over_caption": f"An image of “{label}” "
            f"({shorten(str(shown['drawn_over_file']), MAX_NAME)}) with it drawn over: called "
            f"“{shorten(name, MAX_NAME)}”",
        }
    return out


def subgroup_section(
    run: AuditRun, c: ClassRecord, s: SubgroupRecord, primary: str
) -> dict[str, Any]:
    """A flagged or warned subgroup: its mean map, why, and the class's exemplars in it."""
    mean = run.evidence.get("subgroup_means", {}).get(f"{c.name}/{s.subgroup}")
    members = set(s.members)
    return {
        "anchor": f"subgroup-{c.index}-{s.subgroup}",
        "title": f"“{c.name}”, subgroup {s.subgroup} of {s.of}",
        "n": s.n,
        "class_n": c.n,
        "class_status": c.status,
        "accuracy": pct(s.accuracy),
        "status": s.status,
        "reasons": s.reasons,
        "mean_map": None if mean is None else figures.heat_image(mean),
        "exemplars": [
            _thumbnail(e, primary)
            for e in _evidence(run, c.name).get("exemplars", [])
            if e["image_id"] in members and primary in e["maps"]
        ],
    }


def _evidence(run: AuditRun, name: str) -> dict[str, Any]:
    found: dict[str, Any] = run.evidence.get("classes", {}).get(name, {})
    return found


def _thumbnail(e: dict[str, Any], primary: str) -> dict[str, Any]:
    return {
        "uri": figures.overlay(e["image"], e["maps"][primary], e["mask"]),
        "caption": f"{shorten(str(e['file_name']), MAX_NAME)} · C "
        f"{signed(e['scores'].get(primary))}",
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
