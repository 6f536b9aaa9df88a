"""Per-sample localisation scores: how much of a map's evidence falls on the object.

Pure, batched tensor functions on the maps' device. Every metric is computed over the
valid pixels Omega (``valid``, default: all pixels); ignore regions such as COCO crowd
areas or the VOC border are left out of both the object and the background. ``maps`` are
non-negative and never min-max normalised before scoring.

Degenerate samples give NaN, never a fake value; :func:`degenerate_reason` names why:
an empty mask, a mask covering all of Omega, or an all-zero map over Omega.

Shapes: maps (Tensor[N, H, W] >= 0), masks and valid (Tensor[N, H, W] bool) -> Tensor[N].
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from auditor.errors import DataError

Reason = Literal["empty_mask", "full_mask", "zero_map"]
POINTING_TOLERANCE = 15 / 224  # 15 px at 224 px, as in the pointing game's original setting


def _prepare(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(maps as float64 with invalid pixels zeroed, masks within Omega, valid) flattened."""
    if maps.shape != masks.shape:
        raise DataError(f"Expected masks of shape {tuple(maps.shape)}, got {tuple(masks.shape)}.")
    valid = torch.ones_like(masks, dtype=torch.bool) if valid is None else valid.bool()
    inside = masks.bool() & valid
    values = torch.where(valid, maps.double(), 0.0)
    return values.flatten(1), inside.flatten(1), valid.flatten(1)


def degenerate_reason(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None
) -> list[Reason | None]:
    """Why each sample cannot be scored, or None when it can."""
    values, inside, omega = _prepare(maps, masks, valid)
    reasons: list[Reason | None] = []
    for n_in, n_all, total in zip(inside.sum(1), omega.sum(1), values.sum(1)):
        if n_in == 0:
            reasons.append("empty_mask")
        elif n_in == n_all:
            reasons.append("full_mask")
        elif total <= 0:
            reasons.append("zero_map")
        else:
            reasons.append(None)
    return reasons


def _usable(values: torch.Tensor, inside: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    n_in = inside.sum(1)
    return (n_in > 0) & (n_in < omega.sum(1)) & (values.sum(1) > 0)


def mask_fraction(masks: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """a = |M ∩ Omega| / |Omega|."""
    _, inside, omega = _prepare(masks.float(), masks, valid)
    return (inside.sum(1) / omega.sum(1).clamp_min(1)).float()


def energy_inside(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """E = sum(L*M) / sum(L) over Omega (Quantus' relevance mass accuracy)."""
    values, inside, omega = _prepare(maps, masks, valid)
    total = values.sum(1)
    energy = (values * inside).sum(1) / total.clamp_min(1e-300)
    return torch.where(_usable(values, inside, omega), energy, torch.nan).float()


def chance_corrected(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """C = (E - a) / (1 - a): 0 for a uniform map, 1 with all mass on the object, negative
    when the background gets more mass per pixel than the object."""
    energy = energy_inside(maps, masks, valid).double()
    area = mask_fraction(masks, valid).double()
    return ((energy - area) / (1 - area).clamp_min(1e-12)).float()


def lift(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """E / a: how many times more mass per pixel the object gets than a uniform map gives."""
    return (energy_inside(maps, masks, valid).double() / mask_fraction(masks, valid)).float()


def rank_accuracy(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Share of the |M| highest-ranked pixels of Omega that lie in M (Quantus' relevance rank
    accuracy). Ties at the cut are shared: tied pixels count by their fraction inside M."""
    values, inside, omega = _prepare(maps, masks, valid)
    return _top_hits(values, inside, omega, inside.sum(1)) / inside.sum(1).clamp_min(1)


def topk_intersection(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None, *, k: int
) -> torch.Tensor:
    """Share of the ``k`` highest-ranked pixels that lie in M (Quantus' TopKIntersection)."""
    values, inside, omega = _prepare(maps, masks, valid)
    ks = torch.full_like(inside.sum(1), k).minimum(omega.sum(1))
    return _top_hits(values, inside, omega, ks) / ks.clamp_min(1)


def topk_iou(
    maps: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    k: int | None = None,
) -> torch.Tensor:
    """IoU of the top-k pixels with M; ``k`` defaults to |M|, so a perfect map scores 1."""
    values, inside, omega = _prepare(maps, masks, valid)
    ks = inside.sum(1) if k is None else torch.full_like(inside.sum(1), k).minimum(omega.sum(1))
    hits = _top_hits(values, inside, omega, ks)
    return hits / (ks + inside.sum(1) - hits).clamp_min(1e-12)


def _top_hits(
    values: torch.Tensor, inside: torch.Tensor, omega: torch.Tensor, ks: torch.Tensor
) -> torch.Tensor:
    """Expected hits in M among each row's top-``k`` of Omega, ties at the cut shared."""
    ranked = torch.where(omega, values, -math.inf)
    usable = _usable(values, inside, omega).tolist()
    out = torch.empty(values.shape[0], dtype=torch.float32, device=values.device)
    for i, k in enumerate(ks.tolist()):
        if k == 0 or not usable[i]:
            out[i] = math.nan
            continue
        cut = ranked[i].topk(k).values[-1]
        above, tied = ranked[i] > cut, ranked[i] == cut
        slots = k - int(above.sum())
        shared = (inside[i] & tied).sum() * slots / tied.sum()
        out[i] = float((inside[i] & above).sum() + shared)
    return out


def pointing_zone(masks: torch.Tensor, *, tolerance: float = POINTING_TOLERANCE) -> torch.Tensor:
    """The masks grown by ``tolerance`` x the image side (a square window, as the pointing
    game's tolerance), Tensor[N, H, W] bool. The same for every method of a batch, so
    :func:`score_all` takes it once; the square's maximum is taken along rows, then columns
    (2k comparisons per pixel instead of k^2: 15 px at 224 px is a 31 x 31 window)."""
    radius = round(tolerance * max(masks.shape[-2:]))
    if radius == 0:
        return masks.bool()
    grown = masks[:, None].float()
    grown = F.max_pool2d(grown, (2 * radius + 1, 1), stride=1, padding=(radius, 0))
    grown = F.max_pool2d(grown, (1, 2 * radius + 1), stride=1, padding=(0, radius))
    return grown[:, 0] > 0


def pointing_game(
    maps: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    tolerance: float = POINTING_TOLERANCE,
    zone: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 if the map's maximum over Omega lies within ``tolerance`` x the image side of the
    object, else 0. Tied maxima share the point: the score is the fraction of them that hit.
    ``zone``: :func:`pointing_zone` of the masks, when already computed."""
    grown = pointing_zone(masks, tolerance=tolerance) if zone is None else zone
    values, inside, omega = _prepare(maps, masks, valid)
    ranked = torch.where(omega, values, -math.inf)
    at_max = ranked == ranked.amax(1, keepdim=True)
    hits = (at_max & grown.flatten(1)).sum(1) / at_max.sum(1)
    return torch.where(_usable(values, inside, omega), hits.double(), torch.nan).float()


def auroc(
    maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Area under the ROC curve of the map as a pixel classifier of M over Omega (ties count
    one half: the Mann-Whitney statistic). Batched: pixels outside Omega are ranked above
    every map value, which leaves the ranks of those inside Omega as if alone."""
    values, inside, omega = _prepare(maps, masks, valid)
    ranks = average_ranks(torch.where(omega, values, math.inf)) + 1  # 1-based within Omega
    n_pos = inside.sum(1).double()
    n_neg = omega.sum(1).double() - n_pos
    rank_sum = torch.where(inside, ranks, 0.0).sum(1)
    area = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg).clamp_min(1)
    return torch.where(_usable(values, inside, omega), area, torch.nan).float()


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Per-row ranks 0..P-1 of x (Tensor[N, P]), equal values sharing their average rank."""
    values, order = x.sort(1)
    positions = torch.arange(x.shape[1], device=x.device, dtype=torch.float64).expand_as(values)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    run = starts.long().cumsum(1) - 1  # which run of equal values each sorted cell is in
    total = torch.zeros_like(positions).scatter_add_(1, run, positions)
    count = torch.zeros_like(positions).scatter_add_(1, run, torch.ones_like(positions))
    mean = (total / count.clamp_min(1)).gather(1, run)
    return torch.empty_like(mean).scatter_(1, order, mean)


METRICS = {
    "energy_inside": energy_inside,
    "chance_corrected": chance_corrected,
    "lift": lift,
    "rank_accuracy": rank_accuracy,
    "pointing_game": pointing_game,
    "auroc": auroc,
    "topk_iou": topk_iou,
}


def score_all(
    maps: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    zone: torch.Tensor | None = None,
) -> dict[str, list[float]]:
    """Every metric of :data:`METRICS` plus ``mask_fraction``, as lists for table rows;
    ``zone`` (:func:`pointing_zone`) is shared by the methods of one batch."""
    zone = pointing_zone(masks) if zone is None else zone
    scores = {
        name: (
            fn(maps, masks, valid, zone=zone) if fn is pointing_game else fn(maps, masks, valid)
        ).tolist()
        for name, fn in METRICS.items()
    }
    scores["mask_fraction"] = mask_fraction(masks, valid).tolist()
    return scores
