"""A class's evidence as a matplotlib ``Figure`` for a notebook (``run.plot_class``): the
pictures the HTML report inlines (:func:`~auditor.report.figures.heat_pixels`,
:func:`~auditor.report.figures.overlay_pixels`), laid out on axes instead of on a page.
Object API only (``Figure``, never pyplot): nothing changes a notebook's backend, and no
figure stays alive in a global registry after the caller drops it."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from auditor.errors import RunDirError
from auditor.report.classes import hotspot_boxes
from auditor.report.figures import heat_pixels, overlay_pixels
from auditor.report.table import signed
from auditor.report.templating import shorten
from auditor.report.words import class_name

if TYPE_CHECKING:
    from auditor.run import AuditRun

PANEL = 2.0
"""Inches a side of one picture."""
MAX_CAPTION = 28
"""The most characters of a file name in a caption (names come from the data)."""


class NotebookFigure(Figure):
    """A ``Figure`` that shows itself as a PNG when it is a notebook cell's value. A plain
    ``Figure`` made without pyplot shows as ``<Figure size ...>`` unless ``%matplotlib
    inline`` has run; IPython asks any object for ``_repr_png_``."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def class_figure(run: AuditRun, name: str, exemplars: int = 3) -> Figure:
    """Row 0: class ``name``'s mean mask and its mean map per audited method (the hotspot
    box outlined where a finding placed one); then one row per exemplar, at most
    ``exemplars``: the image with its mask outlined, and each method's map over it with
    its C. Always ``(1 + rows of exemplars) x (1 + methods)`` axes, empty ones hidden."""
    record = run.class_record(name)  # a KeyError naming the classes
    if not run.evidence:
        where = run.path if run.path is not None else "this run"
        raise RunDirError(
            f"{where}: no evidence.pt (written by an earlier auditor, or saved without it), "
            "so there are no mean maps or exemplars to draw; run.classes and run.samples "
            "still hold its numbers, and auditing again stores them."
        )
    evidence: dict[str, Any] = run.evidence["classes"].get(name, {})
    methods = run.summary.methods
    shown = evidence.get("exemplars", [])[: max(exemplars, 0)]
    fig = NotebookFigure(figsize=(PANEL * (1 + len(methods)), PANEL * (1 + len(shown)) + 0.4),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(1 + len(shown), 1 + len(methods), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    means = evidence.get("means", {})
    if not means:
        axes[0, 0].text(0, 0.5, "no maps stored:\nno image of this class\nwas scored", fontsize=8)
    _means_row(axes[0], means, methods, hotspot_boxes(record))
    for row, e in zip(axes[1:], shown):
        _exemplar_row(row, e, methods, run.summary.names)
    fig.suptitle(f"{shorten(name, 60)}: {record.status.replace('_', ' ')}", fontsize=10)
    return fig


def _means_row(
    axes: np.ndarray, means: dict[str, Any], methods: list[str], boxes: dict[Any, Any]
) -> None:
    mask = means.get("mask")
    if mask is not None:
        _show(axes[0], heat_pixels(mask), "mean mask")
    for ax, m in zip(axes[1:], methods):
        if m in means:
            title = f"mean {m}" + (" (hotspot)" if m in boxes else "")
            _show(ax, heat_pixels(means[m], mask=mask, box=boxes.get(m)), title)


def _exemplar_row(
    axes: np.ndarray, e: dict[str, Any], methods: list[str], names: list[str]
) -> None:
    predicted = class_name(names, e["prediction"])
    caption = f"{shorten(str(e['file_name']), MAX_CAPTION)}\npredicted {predicted}"
    _show(axes[0], overlay_pixels(e["image"], None, e["mask"]), caption)
    for ax, m in zip(axes[1:], methods):
        if m in e["maps"]:
            title = f"{m} · C {signed(e['scores'].get(m))}"
            _show(ax, overlay_pixels(e["image"], e["maps"][m], e["mask"]), title)


def _show(ax: Axes, pixels: np.ndarray, title: str) -> None:
    ax.imshow(pixels, interpolation="nearest")
    ax.set_title(title, fontsize=8)
