"""The data probe's report (``auditor probe-data``): each class's findings in words, a bar
chart per class (background only vs object only vs chance), and ``data_report.html`` (self-
contained) and ``data_report.pdf``, rendered from ``data_summary.json``'s content."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from auditor.report.figures import png_uri, svg_uri
from auditor.report.render import html_to_pdf
from auditor.report.templating import environment, stylesheet
from auditor.rundir import atomic_write

Examples = Mapping[int, Sequence[tuple[np.ndarray, np.ndarray]]]
SKIPPED_SHOWN = 200
VERDICT_SENTENCES = {
    "fail": "The background alone identifies {flagged}: a model trained on this data can "
    "learn {them} without looking at the object.",
    "warn": "No class is identified by its background alone, but some need a look: see the "
    "warnings and classes with insufficient data.",
    "pass": "No class is identified by its background alone, and no class's objects stand out "
    "in size or position.",
}


def with_reasons(summary: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``summary`` with each class's ``reasons``, in words, after its findings."""
    classes = [{**c, "reasons": class_reasons(c, summary["probe"])} for c in summary["classes"]]
    return {**summary, "classes": classes}


def class_reasons(c: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    """The sentences explaining a class's status, from its stored dict."""
    said = [_sentence(kind, c, settings) for kind in c["findings"]]
    accuracy = c["background_only_accuracy"]
    if accuracy is not None and not {"background_identifies", "background_narrows"} & set(
        c["findings"]
    ):
        said.append(
            f"the background alone gives {c['name']} for {accuracy:.0%} of its images, not "
            f"clearly above chance ({c['chance']:.0%})"
        )
    if c["object_only_accuracy"] is not None:
        said.append(f"the object alone gives {c['object_only_accuracy']:.0%}")
    return said


def _sentence(kind: str, c: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    size, position, closest = c["object_size"], c["object_position"], c["closest_class"]
    if kind == "too_few_images":
        return f"{c['n']} usable images, fewer than the minimum {settings['min_n']}"
    if kind == "not_cross_validated":
        return (
            f"left out of the cross-validation: it needs {settings['folds']} usable images in "
            "this class and in at least one other"
        )
    if kind in ("background_identifies", "background_narrows"):
        low, high = c["ci95"]
        head = (
            f"the background alone gives {c['name']} for {c['background_only_accuracy']:.0%} "
            f"of its images (95% CI {low:.0%}–{high:.0%}) against chance {c['chance']:.0%} "
            f"(one-sided binomial p = {c['p_adjusted']:.2g} after Benjamini–Hochberg)"
        )
        rate = closest["background_only_rate"]
        if kind == "background_identifies":
            low_gap, high_gap = closest["gap_ci95"]
            return (
                f"{head}, and {rate:.0%} for the backgrounds of {closest['name']}, the most "
                f"similar class (difference 95% CI {low_gap:+.0%} to {high_gap:+.0%})"
            )
        return (
            f"{head}, but the backgrounds of {closest['name']} are called {c['name']} nearly as "
            f"often ({rate:.0%}): the background rules other classes out without identifying "
            "this one"
        )
    if kind in ("small_objects", "large_objects"):
        word = "small" if kind == "small_objects" else "large"
        return (
            f"objects are {word} for this dataset: median area {size['median']:.1%} of the "
            f"image, against {size['others_median']:.1%} for the other classes"
        )
    if kind == "fixed_position":
        return (
            f"objects sit in nearly the same place, around ({position['x_mean']:.2f}, "
            f"{position['y_mean']:.2f}): centroid spread {position['spread']:.2f} of the image "
            f"side, against {position['others_spread']:.2f} for the other classes"
        )
    return (
        f"objects sit elsewhere than the other classes' objects: mean centroid "
        f"({position['x_mean']:.2f}, {position['y_mean']:.2f}), {position['offset']:.2f} of "
        "the image side away from theirs"
    )


def accuracy_chart(c: Mapping[str, Any]) -> str | None:
    """SVG bar chart of the background-only and object-only accuracy (95% CI) against chance;
    None for a class left out of the cross-validation."""
    if c["background_only_accuracy"] is None:
        return None
    fig = Figure(figsize=(3.4, 1.78), dpi=100)
    ax = fig.subplots()
    bars = [("object only", c["object_only_accuracy"], c["object_only_ci95"], "#8a96a8"),
            ("background only", c["background_only_accuracy"], c["ci95"], "#4a6fa5")]  # fmt: skip
    for row, (_, value, ci, colour) in enumerate(bars):
        low, high = (value if v is None else v for v in ci)
        ax.barh(row, value, color=colour, xerr=[[value - low], [high - value]], capsize=3)
    ax.axvline(c["chance"], color="#c0392b", lw=1.2, ls="--")
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"accuracy on the class; dashed: chance {c['chance']:.2f}", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    return svg_uri(fig)


def data_report_context(summary: Mapping[str, Any], examples: Examples) -> dict[str, Any]:
    """Everything ``data_report.html.j2`` reads."""
    flagged = summary["flagged_classes"]
    sentence = VERDICT_SENTENCES[summary["verdict"]].format(
        flagged=", ".join(flagged), them="them" if len(flagged) > 1 else "it"
    )
    order = {"flag": 0, "warn": 1, "insufficient_data": 2, "pass": 3}
    classes = sorted(summary["classes"], key=lambda c: (order[c["status"]], c["index"]))
    return {
        "summary": summary,
        "dataset": summary["dataset"],
        "settings": summary["probe"],
        "verdict": summary["verdict"],
        "sentence": sentence,
        "classes": [_class_view(c, examples.get(c["index"], ())) for c in classes],
        "skipped": summary["dataset"]["skipped"][:SKIPPED_SHOWN],
        "skipped_more": max(0, len(summary["dataset"]["skipped"]) - SKIPPED_SHOWN),
        "css": stylesheet(),
    }


def _class_view(c: Mapping[str, Any], shown: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    low, high = c["ci95"]
    size, position = c["object_size"], c["object_position"]
    return {
        **c,
        "anchor": f"class-{c['index']}",
        "background": pct(c["background_only_accuracy"]),
        "ci": "" if low is None else f"[{pct(low)}, {pct(high)}]",
        "chance_text": pct(c["chance"]),
        "object": pct(c["object_only_accuracy"]),
        "p_text": "n/a" if c["p_adjusted"] is None else f"{c['p_adjusted']:.2g}",
        "area": "n/a" if size["median"] is None else f"{size['median']:.1%}",
        "centroid": "n/a"
        if position["x_mean"] is None
        else f"({position['x_mean']:.2f}, {position['y_mean']:.2f}) ± {position['spread']:.2f}",
        "chart": accuracy_chart(c),
        "examples": [{"background": png_uri(b), "object": png_uri(o)} for b, o in shown],
    }


def render_data_html(summary: Mapping[str, Any], examples: Examples) -> str:
    template = environment().get_template("data_report.html.j2")
    return template.render(**data_report_context(summary, examples))


def write_data_reports(
    summary: Mapping[str, Any], examples: Examples, out: Path, *, pdf: bool = True
) -> dict[str, int]:
    """Write ``data_report.html`` (and ``data_report.pdf``) into ``out``; return their sizes."""
    html = render_data_html(summary, examples).encode("utf-8")
    atomic_write(out / "data_report.html", html)
    sizes = {"data_report.html": len(html)}
    if pdf:
        document = html_to_pdf(html.decode("utf-8"), base=out)
        atomic_write(out / "data_report.pdf", document)
        sizes["data_report.pdf"] = len(document)
    return sizes
