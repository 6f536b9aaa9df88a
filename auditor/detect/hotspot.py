"""Off-object hotspots: a small cue in the same place on a class's images (a corner mark, a
watermark) that draws attribution there and nowhere on the other classes' images. A mass
ratio such as C dilutes a cue of a few pixels over the whole background; its place does not.

Per class and audited method, while the audit streams: each image's map pooled to a
``GRID`` x ``GRID`` grid and scaled to unit mass, with the cells that its object (the mask
dilated as for the interventions) or an ignored region touches set to NaN
(:func:`off_object_maps`), into a bounded sample that depends neither on the batch order
nor on a resume (:class:`~auditor.detect.maps.MapSample`, one per method, with the same
keys, so every method keeps the same images).

After the stream (:func:`class_hotspots`), a window of ``WINDOW`` x ``WINDOW`` cells is
scored on an image by its *lift*: its share of the image's off-object mass over its share of
the off-object cells (1 for mass spread evenly off the object, whatever the object's size
and however much mass the object takes), less the mean lift of the image's windows as far
from its object (:func:`window_excess`: a halo that thins out with the distance from the
object, wider for one class's maps than for another's, is no place). An image counts for a
window only when its object leaves the window free. Each image falls, by a seeded key of
its dataset position, in one of two halves. On the first, the window where the class's
excess most exceeds that of the nearest other class (Welch's t) is chosen; on the second,
held out so that the choice does not bias the test, the class's excess there is held
against each other class's by one-sided Mann-Whitney tests, the largest p counting (the
place must be the class's own, shared with no other class), with the smallest probability
of superiority (the chance that one of the class's images gives the window more than an
image of the other class does) as the effect size. p-values are Benjamini-Hochberg
adjusted across classes x methods. :mod:`auditor.detect.rule` decides what they mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu, wilcoxon

from auditor.config import DetectConfig
from auditor.detect.interventions import dilate, margin
from auditor.detect.maps import GRID, MapSample, pooled
from auditor.detect.stats_util import benjamini_hochberg, finite

WINDOW = 2
SPLIT_STREAM = 14  # the seed stream of the halves, apart from every other seeded draw


def excluded_cells(masks: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """masks (Tensor[N, H, W] bool), valid (Tensor[N, H, W] bool or None) -> Tensor[N, GRID *
    GRID] bool: the cells that the object, dilated by :func:`margin`, or an ignored pixel
    touches."""
    excluded = dilate(masks, margin(masks))
    if valid is not None:
        excluded = excluded | ~valid
    return F.adaptive_max_pool2d(excluded[:, None].float(), GRID).flatten(1) > 0


def off_object_maps(maps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """maps (Tensor[N, H, W], non-negative), cells (Tensor[N, GRID * GRID] bool, from
    :func:`excluded_cells`) -> float32 Tensor[N, GRID * GRID] on the CPU: each map pooled to
    the grid and scaled to unit mass, NaN on ``cells``; an all-zero map is all NaN."""
    share, total = pooled(maps)
    return share.masked_fill(cells.to(share.device) | (total <= 0), float("nan")).cpu()


def window_lifts(maps: np.ndarray) -> np.ndarray:
    """maps (ndarray[n, GRID * GRID] from :func:`off_object_maps`) -> ndarray[n, w * w] with
    w = GRID - WINDOW + 1: each window's share of the off-object mass over its share of the
    off-object cells; 0 where no mass is off the object; NaN where the window touches the
    object or the map has no mass."""
    grid = maps.reshape(-1, GRID, GRID).astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(grid, (WINDOW, WINDOW), axis=(1, 2))
    mass = windows.sum(axis=(-2, -1)).reshape(len(grid), -1)
    off = np.nansum(grid, axis=(1, 2))[:, None]
    cells = np.isfinite(grid).sum(axis=(1, 2))[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = np.where(off > 0, mass / off, 0.0) * cells / WINDOW**2
    return np.where(np.isfinite(mass), lift, np.nan)


def window_excess(maps: np.ndarray) -> np.ndarray:
    """maps (ndarray[n, GRID * GRID] from :func:`off_object_maps`) -> ndarray[n, w * w]: each
    window's lift (:func:`window_lifts`) less the mean lift of the image's windows as far
    from its object (chessboard distance in cells, the nearest of the window's cells). Mass
    that thins out with the distance from the object (a map's halo around it) is the same
    at every place that far, so only a place that draws more than its distance explains is
    left; NaN where the lift is."""
    lifts = window_lifts(maps)
    distance = _window_distance(np.isnan(maps.reshape(-1, GRID, GRID)))
    n = len(lifts)
    finite = np.isfinite(lifts)
    band = np.arange(n)[:, None] * (2 * GRID) + distance  # one band per image and distance
    sums = np.bincount(band[finite], lifts[finite], minlength=n * 2 * GRID)
    counts = np.bincount(band[finite], minlength=n * 2 * GRID)
    return lifts - sums[band] / np.maximum(counts[band], 1)


def _window_distance(excluded: np.ndarray) -> np.ndarray:
    """excluded (ndarray[n, GRID, GRID] bool) -> ndarray[n, w * w] int: per window, the
    chessboard distance in cells from its nearest cell to an excluded cell (2 * GRID - 1
    where none is)."""
    reached = torch.from_numpy(excluded).float()[:, None]
    distance = torch.full(reached.shape, 2 * GRID - 1)
    distance[reached > 0] = 0
    for step in range(1, GRID):
        reached = F.max_pool2d(reached, 3, stride=1, padding=1)
        distance[(reached > 0) & (distance > step)] = step
    cells = distance[:, 0].numpy()
    windows = np.lib.stride_tricks.sliding_window_view(cells, (WINDOW, WINDOW), axis=(1, 2))
    return windows.min(axis=(-2, -1)).reshape(len(cells), -1)


def first_half(samples: Sequence[int], seed: int) -> np.ndarray:
    """ndarray[n] bool: the samples (dataset positions) in the half that chooses the window;
    a seeded coin per position, so the halves do not depend on the order or on a resume."""
    keys = [np.random.default_rng([seed, s, SPLIT_STREAM]).random() for s in samples]
    return np.asarray(keys, dtype=np.float64) < 0.5


@dataclass(frozen=True)
class Hotspot:
    """The window chosen for one class and method, tested on the held-out half: the class's
    mean ``lift`` there on ``n`` images whose objects leave it free, and its mean ``excess``
    over places as far from the object; ``reference`` and ``n_other``: the mean lift and
    images of the other class closest to it (the largest p); ``superiority``: the smallest
    against any other class; ``p``: the largest of the tests (:func:`_class_hotspot`).
    ``row``, ``col``: the window's top-left cell; ``size``: the input's side in pixels."""

    method: str
    size: int
    row: int
    col: int
    lift: float
    reference: float
    reference_class: int
    excess: float
    superiority: float
    p: float
    n: int
    n_other: int
    p_adjusted: float = float("nan")
    prior_lift: float = float("nan")  # the class's maps' mean lift on other classes' images
    n_prior: int = 0

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) as fractions of the image's width and height."""
        return (self.col / GRID, self.row / GRID,
                (self.col + WINDOW) / GRID, (self.row + WINDOW) / GRID)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = (v * self.size for v in self.box)
        return {
            "method": self.method,
            "box": [round(v, 4) for v in self.box],
            "box_px": [int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))],
            "where": where(self.box),
            "lift": finite(self.lift),
            "reference": finite(self.reference),
            "reference_class": self.reference_class,
            "excess": finite(self.excess),
            "superiority": finite(self.superiority),
            "p": finite(self.p),
            "p_adjusted": finite(self.p_adjusted),
            "n": self.n,
            "n_other": self.n_other,
            "prior_lift": finite(self.prior_lift),
            "n_prior": self.n_prior,
        }  # fmt: skip


def where(box: Sequence[float]) -> str:
    """A box (fractions of the image) in words, by the third of the image its centre is in:
    ``top-left corner``, ``top edge``, ``centre``, ..."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    column = ("left", "centre", "right")[min(int(x * 3), 2)]
    row = ("top", "middle", "bottom")[min(int(y * 3), 2)]
    if row == "middle" and column == "centre":
        return "centre"
    if row == "middle" or column == "centre":
        return f"{column if row == 'middle' else row} edge"
    return f"{row}-{column} corner"


def class_hotspots(
    kept: Mapping[int, Mapping[str, MapSample]],
    methods: Sequence[str],
    config: DetectConfig,
    *,
    size: int,
    priors: Mapping[int, Mapping[str, torch.Tensor]] | None = None,
) -> dict[int, dict[str, Hotspot]]:
    """Per class and method (maps of a ``size`` x ``size`` input), the held-out test of the
    window chosen on the other half, with p-values Benjamini-Hochberg adjusted across
    classes x methods; none where no window can be chosen or no other class has ``min_n``
    held-out images to hold it against. ``priors[c][m]``: off-object maps (from
    :func:`off_object_maps`) of method m for *target* c on images of other classes, which
    lack class c's content: where given, class c's own images must also draw more to the
    window than those (a place the class's maps draw to whatever the image shows, such as
    a border the network's padding marks, is no cue); fewer than ``min_n`` of them that
    leave the window free give p = 1."""
    found: dict[int, dict[str, Hotspot]] = {c: {} for c in kept}
    for method in methods:
        lifts, excess, halves = {}, {}, {}
        for c, by_method in kept.items():
            if method in by_method and by_method[method].samples:
                samples, maps = by_method[method].ordered()
                lifts[c], excess[c] = window_lifts(maps.numpy()), window_excess(maps.numpy())
                halves[c] = first_half(samples, config.seed)
        for c in lifts:
            given = (priors or {}).get(c, {}).get(method)
            prior = None if given is None else (window_lifts(given.numpy()),
                                                window_excess(given.numpy()))  # fmt: skip
            spot = _class_hotspot(method, size, c, (lifts, excess), halves, config.min_n, prior)
            if spot is not None:
                found[c][method] = spot
    tested = [(c, m) for c, spots in found.items() for m in spots]
    adjusted = benjamini_hochberg([found[c][m].p for c, m in tested])
    for (c, m), p in zip(tested, adjusted):
        found[c][m] = replace(found[c][m], p_adjusted=p)
    return found


COMPETITORS = 20  # the other classes a window is held against, those drawing the most to it
Values = Mapping[int, np.ndarray]


def _class_hotspot(
    method: str,
    size: int,
    label: int,
    values: tuple[Values, Values],
    halves: Values,
    min_n: int,
    prior: tuple[np.ndarray, np.ndarray] | None = None,
) -> Hotspot | None:
    """Choose the window on the first half, where the class's excess lift most exceeds that
    of the other class nearest to it (the smallest Welch t); test it on the second half
    against each of the (at most ``COMPETITORS``) other classes with ``min_n`` images there
    whose mean excess is highest, by one-sided Mann-Whitney tests, and against zero, by a
    one-sided Wilcoxon signed-rank test. The largest p counts (an intersection-union test:
    the window must draw more than places as far from the object on the class's own images,
    so that a place other classes' maps avoid is no hotspot of this one's; and more than on
    every other class's, so that a place several classes' maps share, or the relative lift
    a hotspot of one class takes from the other places of its maps, is none); and, with a
    ``prior`` (lifts and excesses of the class's maps on other classes' images), more than
    on those. The means reported are of the plain lifts."""
    lifts, excess = values
    others = [c for c in excess if c != label]
    own, second = excess[label], ~halves[label]
    window = _choose(own[~second], [excess[c][halves[c]] for c in others], min_n)
    if window is None:
        return None
    x = _finite(own[second, window])
    rivals = {c: v for c in others if (v := _finite(excess[c][~halves[c], window])).size >= min_n}
    if x.size == 0 or not rivals:
        return None
    ranked = sorted(rivals, key=lambda c: -rivals[c].mean())[:COMPETITORS]
    tests = {c: _greater(x, rivals[c]) for c in ranked}
    closest = max(ranked, key=lambda c: tests[c][0])
    p = max(tests[closest][0], _positive(x))
    superiority = min(s for _, s in tests.values())
    prior_lift, n_prior = float("nan"), 0
    if prior is not None:
        z = _finite(prior[1][:, window])
        prior_lift, n_prior = _mean(_finite(prior[0][:, window])), z.size
        p_prior, s_prior = _greater(x, z) if z.size >= min_n else (1.0, float("nan"))
        p, superiority = max(p, p_prior), min(superiority, s_prior)
    row, col = divmod(window, GRID - WINDOW + 1)
    lift, reference = (
        _mean(_finite(lifts[label][second, window])),
        _mean(_finite(lifts[closest][~halves[closest], window])),
    )
    return Hotspot(method, size, row, col, lift, reference, closest, _mean(x), superiority, p,
                   x.size, rivals[closest].size, prior_lift=prior_lift,
                   n_prior=n_prior)  # fmt: skip


def _choose(own: np.ndarray, others: Sequence[np.ndarray], min_n: int) -> int | None:
    """The window (column of the lifts) where the smallest Welch t of ``own`` over any of
    ``others`` is largest, among those with ``min_n`` finite values of ``own`` and of some
    other class (the windows the held-out half can test); an other class with fewer there
    is passed over. None when no window qualifies."""
    a = _moments(own)
    usable = a[2] >= min_n
    worst, rivalled = np.full(own.shape[1], np.inf), np.zeros(own.shape[1], dtype=bool)
    for other in others:
        b = _moments(other)
        worst = np.where(b[2] >= min_n, np.minimum(worst, _welch_t(a, b)), worst)
        rivalled |= b[2] >= min_n
    usable &= rivalled
    if not usable.any():
        return None
    return int(np.argmax(np.where(usable, np.nan_to_num(worst, nan=-np.inf), -np.inf)))


Moments = tuple[np.ndarray, np.ndarray, np.ndarray]


def _moments(values: np.ndarray) -> Moments:
    """Per column: mean, sample variance and count of the finite values (0 where none)."""
    finite = np.isfinite(values)
    n = finite.sum(0)
    filled = np.where(finite, values, 0.0)
    mean = filled.sum(0) / np.maximum(n, 1)
    var = np.where(finite, (filled - mean) ** 2, 0.0).sum(0) / np.maximum(n - 1, 1)
    return mean, var, n


def _welch_t(a: Moments, b: Moments) -> np.ndarray:
    """Welch's t of a's mean over b's, per column (+-inf where both have no spread)."""
    difference = a[0] - b[0]
    se = np.sqrt(a[1] / np.maximum(a[2], 1) + b[1] / np.maximum(b[2], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(se > 0, difference / se, np.sign(difference) * np.inf)


def _positive(x: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p that x tends to be above 0 (1 when all are 0)."""
    if not np.any(x != 0):
        return 1.0
    p = wilcoxon(x, alternative="greater").pvalue
    return float(p) if np.isfinite(p) else 1.0


def _greater(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """One-sided Mann-Whitney p that x tends to exceed y, and P(x > y) + P(x = y) / 2."""
    result = mannwhitneyu(x, y, alternative="greater")
    p = float(result.pvalue) if np.isfinite(result.pvalue) else 1.0
    return p, float(result.statistic) / (x.size * y.size)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")
