"""Pictures for the report as inline ``data:`` URIs: heatmap overlays with the mask outline,
and score charts. Colormaps and charts come from matplotlib's object API (``Figure``), which
draws without pyplot, so importing this module never switches a notebook's backend."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text
from PIL import Image

from auditor.report.glyphs import Fonts

COLORMAP = "inferno"  # perceptually uniform
OUTLINE = np.array([0, 255, 255], dtype=np.uint8)
BOX = np.array([0, 255, 0], dtype=np.uint8)
DISPLAY = 160


def png_uri(pixels: np.ndarray) -> str:
    """uint8 ``[H, W, 3]`` -> ``data:image/png;base64,...``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask: inside pixels with an outside 4-neighbour."""
    padded = np.pad(mask, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return mask & ~interior


def overlay(
    image: torch.Tensor,
    heat: torch.Tensor | None,
    mask: torch.Tensor | None,
    *,
    alpha: float = 0.55,
) -> str:
    """The image with ``heat`` blended in and the mask outlined (when there are any).

    image (uint8 Tensor[3, t, t]), heat (Tensor[t, t] in [0, 1] or None), mask (bool Tensor[t, t]
    or None)
    """
    return png_uri(overlay_pixels(image, heat, mask, alpha=alpha))


def overlay_pixels(
    image: torch.Tensor,
    heat: torch.Tensor | None,
    mask: torch.Tensor | None,
    *,
    alpha: float = 0.55,
) -> np.ndarray:
    """What :func:`overlay` draws, as uint8 ``[H, W, 3]`` pixels (upscaled for display): the
    report inlines them as PNG, :mod:`auditor.report.plots` shows them in a ``Figure``."""
    pixels = image.permute(1, 2, 0).numpy().astype(np.float64)
    if heat is not None:
        colored = matplotlib.colormaps[COLORMAP](heat.float().clamp(0, 1).numpy())[..., :3] * 255
        pixels = (1 - alpha) * pixels + alpha * colored
    pixels = _upscale(pixels.round().astype(np.uint8))
    if mask is not None:
        edge = outline(_upscale(mask.numpy().astype(np.uint8)[..., None])[..., 0].astype(bool))
        pixels[edge] = OUTLINE
    return pixels


def heat_image(
    heat: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    box: Sequence[float] | None = None,
) -> str:
    """A mean map (or mean mask) alone, colour-mapped and scaled to its own maximum, with
    ``box`` (x0, y0, x1, y1 as fractions of the image: a hotspot) outlined."""
    return png_uri(heat_pixels(heat, mask=mask, box=box))


def heat_pixels(
    heat: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    box: Sequence[float] | None = None,
) -> np.ndarray:
    """What :func:`heat_image` draws, as uint8 ``[H, W, 3]`` pixels (upscaled for display)."""
    values = heat.float().numpy()
    values = values / values.max() if values.max() > 0 else values
    pixels = _upscale((matplotlib.colormaps[COLORMAP](values)[..., :3] * 255).astype(np.uint8))
    if mask is not None:
        binary = _upscale((mask.numpy() >= 0.5).astype(np.uint8)[..., None])[..., 0].astype(bool)
        pixels[outline(binary)] = OUTLINE
    if box is not None:
        pixels[box_outline(pixels.shape[:2], box)] = BOX
    return pixels


def box_outline(shape: tuple[int, ...], box: Sequence[float], *, width: int = 2) -> np.ndarray:
    """bool ``[H, W]``: the ``width``-pixel outline of ``box`` (fractions of the image)."""
    h, w = shape
    x0, x1 = round(box[0] * w), max(round(box[2] * w), round(box[0] * w) + 1)
    y0, y1 = round(box[1] * h), max(round(box[3] * h), round(box[1] * h) + 1)
    inside = np.zeros((h, w), dtype=bool)
    inside[y0:y1, x0:x1] = True
    inner = np.zeros((h, w), dtype=bool)
    inner[y0 + width : y1 - width, x0 + width : x1 - width] = True
    return inside & ~inner


def _upscale(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[0] >= DISPLAY:
        return pixels
    factor = -(-DISPLAY // pixels.shape[0])
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


MAX_LABEL = 60
"""The most characters of a chart's title or label (names come from the data)."""


def _text(ax_text: Text, text: str, fonts: Fonts | None, size: float) -> None:
    """Set ``text`` (shortened) on a title or tick label in a font that has its characters."""
    text = text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"
    path, drawable = (None, text) if fonts is None else fonts.font_for(text)
    ax_text.set_text(drawable)
    ax_text.set_fontproperties(FontProperties(fname=path, size=size))


def svg_uri(fig: Figure) -> str:
    """``fig`` laid out and saved as an SVG ``data:`` URI (its text drawn as paths)."""
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()


def histogram_svg(
    values: Sequence[float], *, threshold: float, title: str, fonts: Fonts | None
) -> str:
    """SVG histogram of a class's chance-corrected scores with the flag threshold marked."""
    fig = Figure(figsize=(4.2, 2.2), dpi=100)
    ax = fig.subplots()
    finite = [v for v in values if np.isfinite(v)]
    ax.hist(finite, bins=np.linspace(-1, 1, 41).tolist(), color="#4a6fa5")
    ax.axvline(0, color="#555", lw=0.8, ls=":")
    ax.axvline(threshold, color="#c0392b", lw=1.2, ls="--", label="flag threshold")
    ax.set_xlabel("chance-corrected energy (0 = chance)")
    ax.set_ylabel("images")
    _text(ax.set_title(""), title, fonts, 9)
    ax.legend(fontsize=7, frameon=False)
    return svg_uri(fig)


def group_bars_svg(
    bars: Sequence[tuple[str, float]],
    *,
    worst: str | None,
    title: str,
    fonts: Fonts | None,
) -> str:
    """Horizontal bars of accuracy per class x group (labels ``class · value``), the worst
    judged cell in red."""
    height = 0.6 + 0.22 * max(len(bars), 1)
    fig = Figure(figsize=(4.6, height), dpi=100)
    ax = fig.subplots()
    labels = [label for label, _ in bars]
    colours = ["#c0392b" if label == worst else "#4a6fa5" for label in labels]
    ax.barh(range(len(bars)), [100 * value for _, value in bars], color=colours)
    ticks = ax.set_yticks(range(len(bars)), labels, fontsize=7)
    for tick, label, colour in zip(ticks, labels, colours):
        _text(tick.label1, label, fonts, 7)
        tick.label1.set_color(colour)  # a worst cell at 0% has no bar to colour
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)", fontsize=8)
    _text(ax.set_title(""), title, fonts, 9)
    return svg_uri(fig)


STATUS_COLOURS = {"pass": "#2e7d32", "warn": "#e69500", "flag": "#c0392b"}


def trend_svg(points: Sequence[dict], *, title: str, fonts: Fonts | None) -> str:
    """A class over its last runs (oldest left): mean C and the swap gap as lines, each run's
    status as the marker's colour (``points``: run ``id``, ``status``, ``c``, ``swap_gap``)."""
    fig = Figure(figsize=(4.2, 2.0), dpi=100)
    ax = fig.subplots()
    xs = list(range(len(points)))
    for key, label, style in (("c", "mean C", "-"), ("swap_gap", "swap gap", "--")):
        ys = [np.nan if p.get(key) is None else float(p[key]) for p in points]
        ax.plot(xs, ys, style, color="#4a6fa5" if key == "c" else "#777", lw=1.2, label=label)
        colours = [STATUS_COLOURS.get(p.get("status", ""), "#999") for p in points]
        ax.scatter(xs, ys, c=colours, s=22, zorder=3)
    ax.axhline(0, color="#555", lw=0.6, ls=":")
    labels = ["this run" if p["id"] == "now" else f"#{p['id']}" for p in points]
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_xlabel("run (marker: status)", fontsize=8)
    _text(ax.set_title(""), title, fonts, 9)
    ax.legend(fontsize=7, frameon=False)
    return svg_uri(fig)
