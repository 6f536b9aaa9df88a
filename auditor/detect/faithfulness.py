"""Is a method's map faithful to the model? ROAD against a random map, per method.

ROAD (RemOve And Debias; Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML) removes the pixels a map ranks highest (MoRF) or lowest
(LeRF), fills them by noisy linear imputation and watches the softmax probability of the
label. The definitions follow pytorch-grad-cam's ``ROADCombined`` (the tests compare them):
fractions removed 0.1, ..., 0.9 (its percentiles 10..90); the score of one order at one
fraction is the probability after imputation minus before; the combined score is the mean
over fractions of (LeRF - MoRF) / 2, higher for a more faithful map; the imputation noise is
N(0, 0.01^2) on the imputed pixels only, in the images' own units.

Ties differ on purpose: pytorch-grad-cam removes every pixel at or above a percentile, so a
map that is 0 on most pixels (a CAM after its ReLU) loses most of them at once. Here pixels
are ranked by value, ties by a second, random key, and exactly as many are removed as
pytorch-grad-cam removes from a map without ties (``n - ceil((n - 1) (1 - fraction))``).

:func:`faithfulness` compares each method's per-image score with that of a random map
(uniform noise at the image resolution, the same for every method) by a paired one-sided
t-test. The random map also breaks every method's ties and all runs draw the same
imputation noise, so a dead (constant) map scores exactly as the random map and is never
judged faithful. The caller decides what an unfaithful method may still drive.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import t as student_t
from torch import nn

from auditor.attribution.fused import eval_mode
from auditor.detect.stats_util import finite
from auditor.errors import AttributionError, ConfigError, DataError, ModelError

log = logging.getLogger(__name__)

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NOISE = 0.01  # pytorch-grad-cam's and the ROAD authors' NoisyLinearImputer default
TOLERANCE = 1e-6  # relative residual at which the imputation's solver stops
MAX_ITERATIONS = 500  # multigrid-preconditioned CG needs 10-50 up to 128 px
CONFIDENCE = 0.95
_OMEGA = 0.8  # damping of the Jacobi smoother
_COARSEST = 4  # the multigrid hierarchy stops at a grid this small ...
_COARSEST_SWEEPS = 8  # ... on which Jacobi sweeps serve as the solver


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """One method's ROAD against a random map's, over ``n`` images."""

    n: int
    road: float  # the method's mean combined ROAD score
    random_road: float  # the random maps' mean combined ROAD score
    difference: float  # mean of the paired differences, method - random
    ci_low: float  # its CONFIDENCE t interval
    ci_high: float
    p: float  # one-sided paired t-test: the method scores above the random maps
    faithful: bool  # p < alpha and difference > 0
    seconds: float  # the method's own ROAD; the random maps' ROAD is shared and not counted

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and inf become None; the interval is ``ci95: [low, high]``."""
        record = {k: finite(v) if isinstance(v, float) else v for k, v in vars(self).items()}
        record["ci95"] = [record.pop("ci_low"), record.pop("ci_high")]
        record.pop("seconds")  # timings live in run.json: the summary stays reproducible
        return record


def faithfulness(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    seed: int,
    alpha: float = 0.05,
    fractions: Sequence[float] = FRACTIONS,
    noise: float = NOISE,
) -> dict[str, Faithfulness]:
    """ROAD of each method's maps against random maps on the same images.

    images (Tensor[N, C, H, W]) as the model takes them, labels (Tensor[N]) the classes whose
    probability is watched, maps {method: Tensor[N, h, w]} (upsampled bilinearly to H, W
    when they differ). The random maps, uniform noise drawn from ``seed``, break every
    method's ties; the imputation noise comes from ``seed + 1``, afresh for every method and
    the random maps, so the paired differences share it. The same seed gives the same
    result, and a method's result does not depend on the other methods."""
    _check_options(fractions, noise, alpha)
    if not maps:
        return {}
    shape = (images.shape[0], *images.shape[-2:])
    random = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    settings: dict[str, Any] = {"fractions": fractions, "noise": noise, "ties": random}
    generator = torch.Generator().manual_seed(seed + 1)
    baseline = road(model, images, labels, random, **settings, generator=generator)
    results = {}
    for name, method_maps in maps.items():
        start, generator = time.perf_counter(), torch.Generator().manual_seed(seed + 1)
        scores = road(model, images, labels, method_maps, **settings, generator=generator)
        results[name] = _compare(scores, baseline, alpha=alpha, start=start)
    return results


@torch.no_grad()
def road(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    maps: torch.Tensor,
    *,
    fractions: Sequence[float] = FRACTIONS,
    noise: float = NOISE,
    generator: torch.Generator | None = None,
    ties: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image combined ROAD score, Tensor[N] float32 on the images' device.

    images (Tensor[N, C, H, W]), labels (Tensor[N]), maps (Tensor[N, h, w]), ties
    (Tensor[N, H, W], the order among pixels of equal map value; by default uniform noise
    from ``generator``, which then draws the imputation noise). One forward pass of the batch
    before, one per fraction and order, in eval mode (each submodule's mode is restored)."""
    _check_options(fractions, noise)
    maps = _at_image_size(maps, images, labels)
    n, _, height, width = images.shape
    pixels = height * width
    if ties is None:
        ties = torch.rand(n, height, width, generator=generator, device=_home(generator))
    if ties.shape != (n, height, width):
        raise DataError(f"Expected ties of shape {(n, height, width)}, got {tuple(ties.shape)}.")
    ranks = _ranks(maps.flatten(1), ties.reshape(n, pixels).to(maps.device)).view_as(maps)
    combined = images.new_zeros(n, dtype=torch.float32)
    if n == 0:
        return combined
    with eval_mode(model):
        before = _probability(model, images, labels)
        for fraction in fractions:
            count = _removed_count(pixels, fraction)
            for sign, removed in ((-1, ranks >= pixels - count), (1, ranks < count)):
                after = impute(images, removed, noise=noise, generator=generator)
                combined += sign * (_probability(model, after, labels) - before)
    return combined / (2 * len(fractions))


def impute(
    images: torch.Tensor,
    removed: torch.Tensor,
    *,
    noise: float = NOISE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noisy linear imputation of the ``removed`` pixels (ROAD's), Tensor[N, C, H, W].

    images (Tensor[N, C, H, W]), removed (Tensor[N, H, W] bool). Each removed pixel becomes
    the weighted mean of its neighbours inside the image (1/6 for the four direct ones, 1/12
    for the diagonal ones, normalised by the weights present), all removed pixels of an image
    solved jointly, channel by channel; then N(0, noise^2) is added to the removed pixels
    only, as pytorch-grad-cam's ``NoisyLinearImputer`` does (default noise 0.01 there too).
    Known pixels come back as they were. An image with every pixel removed has no value to
    spread: it becomes 0 (the mean of a normalised image) plus the noise.

    The system (D - W) x = b, symmetric positive definite on the removed pixels, is solved
    on the images' device by conjugate gradients in float64 (float32 on MPS), preconditioned
    by a float32 multigrid V-cycle, to a relative residual of :data:`TOLERANCE` (in float32,
    rounding 1/6 and 1/12 alone moves a large hole with few known pixels by 1e-3). The noise
    comes from the generator's device (the CPU by default), the same on every device."""
    if images.dim() != 4 or removed.shape != (images.shape[0], *images.shape[2:]):
        raise DataError(
            f"Expected images Tensor[N, C, H, W] and removed Tensor[N, H, W] of the same N, "
            f"H, W, got {tuple(images.shape)} and {tuple(removed.shape)}."
        )
    n, channels, height, width = images.shape
    free = removed[:, None].expand(n, channels, height, width).reshape(-1, height, width)
    filled = images.reshape(-1, height, width).float().masked_fill(free, 0.0)
    if free.any():
        ones = torch.ones(1, height, width, device=images.device)
        exact = torch.float32 if images.device.type == "mps" else torch.float64
        fine = _level(free.to(exact), ones.to(exact))
        right = -_apply(fine, _flat(filled.to(exact)))  # the known neighbours' weighted sum
        solution = _conjugate_gradient(fine, _levels(free.float(), ones), right)
        filled = filled + _grid(solution, height, width).float()
    out = filled.view(n, channels, height, width)
    if noise > 0:
        draws = torch.randn(out.shape, generator=generator, device=_home(generator))
        draws = draws.to(out.device)
        out = out + noise * draws * removed[:, None]
    return out.to(images.dtype)


def _check_options(fractions: Sequence[float], noise: float, alpha: float = 0.5) -> None:
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise ConfigError(f"Expected fractions in (0, 1), got {tuple(fractions)}.")
    if not noise >= 0 or not 0 < alpha < 1:
        raise ConfigError(f"Expected noise >= 0 and alpha in (0, 1), got {noise} and {alpha}.")


def _home(generator: torch.Generator | None) -> torch.device:
    """Where ``generator`` draws: its device, the CPU without one."""
    return generator.device if generator is not None else torch.device("cpu")


def _at_image_size(maps: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """maps Tensor[N, h, w] -> Tensor[N, H, W] float32, checked against images and labels."""
    n = images.shape[0]
    if images.dim() != 4 or maps.dim() != 3 or maps.shape[0] != n or labels.shape != (n,):
        shapes = f"{tuple(images.shape)}, {tuple(labels.shape)} and {tuple(maps.shape)}"
        raise DataError(
            f"Expected images Tensor[N, C, H, W], labels Tensor[N] and maps Tensor[N, h, w] "
            f"of the same N, got {shapes}."
        )
    if not torch.isfinite(maps).all():
        raise AttributionError("Expected finite maps, got NaN or inf values.")
    maps = maps.float().to(images.device)
    if maps.shape[1:] == images.shape[2:] or n == 0:
        return maps
    return F.interpolate(maps[:, None], images.shape[2:], mode="bilinear")[:, 0]


def _ranks(maps: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """Ascending rank of each pixel by map value, equal values by ``ties``. maps and ties
    (Tensor[N, P]) -> Tensor[N, P] int64 holding a permutation of 0..P-1 per row."""
    by_ties = ties.argsort(dim=1)
    order = by_ties.gather(1, maps.gather(1, by_ties).argsort(dim=1, stable=True))
    positions = torch.arange(maps.shape[1], device=maps.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _removed_count(pixels: int, fraction: float) -> int:
    """How many of ``pixels`` pytorch-grad-cam removes at ``fraction`` (its percentile
    100 (1 - fraction), linearly interpolated, every pixel at or beyond it removed)."""
    return pixels - math.ceil((pixels - 1) * (1 - fraction) - 1e-6)


def _probability(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(images)
    if not isinstance(logits, torch.Tensor) or logits.shape[:1] != labels.shape:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise ModelError(f"Expected the model to return logits Tensor[N, K], got {shape}.")
    labels = labels.to(logits.device, torch.long)
    return logits.float().softmax(dim=1).gather(1, labels[:, None])[:, 0]


def _compare(
    scores: torch.Tensor, baseline: torch.Tensor, *, alpha: float, start: float
) -> Faithfulness:
    """Paired one-sided t-test of ``scores`` above ``baseline`` (both Tensor[N]), with the
    t interval of the mean difference; a difference without spread is the test's limit."""
    differences, n = (scores.double() - baseline.double()).cpu(), int(scores.numel())
    mean, p, low, high = float(differences.mean()), math.nan, math.nan, math.nan
    if n >= 2:
        error = float(differences.std()) / math.sqrt(n)
        p = float(student_t.sf(mean / error, n - 1)) if error > 0 else float(mean <= 0)
        half = float(student_t.ppf((1 + CONFIDENCE) / 2, n - 1)) * error
        low, high = mean - half, mean + half
    means = float(scores.double().mean()), float(baseline.double().mean())
    faithful = bool(p < alpha and mean > 0)
    return Faithfulness(n, *means, mean, low, high, p, faithful, time.perf_counter() - start)


# -- the imputation's solver -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Level:
    """One grid of the multigrid hierarchy. Its tensors, Tensor[B, (h + 2) (w + 2)], hold a
    flat layout: the grid with a zero border, rows end to end, so that a pixel's neighbours
    sit at fixed offsets (+-1, +-(w + 2)). Vectors are 0 off the unknowns (removed pixels)."""

    height: int
    width: int
    free: torch.Tensor  # 1 on the unknowns
    diagonal: torch.Tensor  # free (d + 1/3): A v = diagonal v - free stencil(v) / 12
    smoother: torch.Tensor  # free omega / d, the damped Jacobi step


def _flat(grid: torch.Tensor) -> torch.Tensor:
    """Tensor[B, h, w] -> Tensor[B, (h + 2) (w + 2)] with a zero border."""
    return F.pad(grid, (1, 1, 1, 1)).flatten(1)


def _grid(flat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`_flat`: Tensor[B, (h + 2) (w + 2)] -> Tensor[B, h, w]."""
    return flat.view(-1, height + 2, width + 2)[:, 1:-1, 1:-1]


def _stencil(flat: torch.Tensor, width: int) -> torch.Tensor:
    """The [1 2 1] x [1 2 1] sum around each pixel: 12 times the ROAD-weighted neighbour sum
    plus 4 times the pixel. Tensor[B, L] -> Tensor[B, L - 2 (w + 3)], the entries from
    ``w + 3`` on, the only ones whose neighbours are all in ``flat``."""
    row = width + 2
    vertical = flat[:, : -2 * row] + flat[:, 2 * row :]
    vertical.add_(flat[:, row:-row], alpha=2)
    both = vertical[:, :-2] + vertical[:, 2:]
    return both.add_(vertical[:, 1:-1], alpha=2)


def _apply(level: _Level, flat: torch.Tensor) -> torch.Tensor:
    """(D - W) restricted to the unknowns, times ``flat`` (Tensor[B, L]). The first and last
    ``w + 3`` entries are border: 0 in ``level.free``, left out of the stencil."""
    inner = slice(level.width + 3, -level.width - 3)
    out = level.diagonal * flat
    out[:, inner].addcmul_(level.free[:, inner], _stencil(flat, level.width), value=-1 / 12)
    return out


def _level(free: torch.Tensor, inside: torch.Tensor) -> _Level:
    """free (Tensor[B, h, w]) and inside (Tensor[1, h, w], the cells of the image) -> _Level."""
    height, width = free.shape[-2:]
    cells = _flat(inside)
    weights = F.pad(_stencil(cells, width), (width + 3, width + 3)) / 12 - cells / 3  # d
    flat = _flat(free)
    diagonal, smoother = flat * (weights + 1 / 3), flat * _OMEGA / weights.clamp_min(1e-6)
    return _Level(height, width, free=flat, diagonal=diagonal, smoother=smoother)


def _levels(free: torch.Tensor, inside: torch.Tensor) -> list[_Level]:
    """The hierarchy down to :data:`_COARSEST`. A coarse cell lies inside the image when one
    of its 2x2 children does, and is unknown when all its children inside the image are."""
    levels = [_level(free, inside)]
    while min(free.shape[-2:]) > _COARSEST:
        pad = (0, free.shape[-1] % 2, 0, free.shape[-2] % 2)
        known = F.max_pool2d(F.pad(inside * (1 - free), pad), 2)
        inside = F.max_pool2d(F.pad(inside, pad), 2)
        free = inside * (1 - known)
        levels.append(_level(free, inside))
    return levels


def _restrict(grid: torch.Tensor) -> torch.Tensor:
    """Cell-centred full weighting ([1 3 3 1] / 8 per axis), Tensor[B, h, w] ->
    Tensor[B, ceil(h / 2), ceil(w / 2)]: a quarter of the adjoint of :func:`_add_prolonged`."""
    grid = F.pad(grid, (1, 1 + grid.shape[-1] % 2, 1, 1 + grid.shape[-2] % 2))
    even, odd = grid[:, 0::2], grid[:, 1::2]
    grid = even[:, :-1] + odd[:, 1:] + 3 * (odd[:, :-1] + even[:, 1:])
    even, odd = grid[..., 0::2], grid[..., 1::2]
    return (even[..., :-1] + odd[..., 1:] + 3 * (odd[..., :-1] + even[..., 1:])) / 64


def _add_prolonged(level: _Level, flat: torch.Tensor, coarse: torch.Tensor) -> None:
    """flat += free * P coarse, in place, with P the bilinear interpolation from ``coarse``
    (Tensor[B, ceil(h / 2), ceil(w / 2)]) to the level's grid: rows and columns get 3/4 of
    the nearest coarse cell and 1/4 of the next one (0 beyond the edge)."""
    padded, tripled = F.pad(coarse, (1, 1)), 3 * coarse
    columns = torch.stack((tripled + padded[..., :-2], tripled + padded[..., 2:]), -1)
    columns = columns.flatten(-2)[..., : level.width]
    padded, tripled = F.pad(columns, (0, 0, 1, 1)), 3 * columns
    grid, free = (_grid(v, level.height, level.width) for v in (flat, level.free))
    grid[:, 0::2].addcmul_(free[:, 0::2], tripled + padded[:, :-2], value=1 / 16)
    odd = (tripled + padded[:, 2:])[:, : level.height // 2]
    grid[:, 1::2].addcmul_(free[:, 1::2], odd, value=1 / 16)


def _vcycle(levels: Sequence[_Level], residual: torch.Tensor) -> torch.Tensor:
    """One symmetric V-cycle (a Jacobi sweep before and after each coarse correction), an
    SPD approximation of the inverse of level 0's operator applied to ``residual``."""
    level = levels[0]
    solution = level.smoother * residual
    if len(levels) == 1:
        for _ in range(_COARSEST_SWEEPS - 1):
            solution.addcmul_(level.smoother, residual - _apply(level, solution))
        return solution
    rest = _grid(residual - _apply(level, solution), level.height, level.width)
    coarse = levels[1]
    correction = _vcycle(levels[1:], coarse.free * _flat(4 * _restrict(rest)))
    _add_prolonged(level, solution, _grid(correction, coarse.height, coarse.width))
    return solution.addcmul_(level.smoother, residual - _apply(level, solution))


def _conjugate_gradient(
    fine: _Level, levels: Sequence[_Level], right: torch.Tensor
) -> torch.Tensor:
    """Solve ``fine``'s system for each row of ``right`` (Tensor[B, L]) by CG preconditioned
    with a V-cycle over ``levels`` (float32; ``fine`` and ``right`` may be float64). A row
    whose right-hand side is 0 (nothing known around its unknowns) stays 0."""
    tiny = torch.finfo(right.dtype).tiny
    solution, residual = torch.zeros_like(right), right.clone()
    direction = _vcycle(levels, residual.float()).to(right.dtype)
    product, limit = (residual * direction).sum(1), TOLERANCE * right.norm(dim=1)
    for _ in range(MAX_ITERATIONS):
        active = residual.norm(dim=1) > limit
        if not active.any():
            return solution
        image = _apply(fine, direction)
        curvature = (direction * image).sum(1).clamp_min(tiny)
        step = torch.where(active, product / curvature, 0.0)[:, None]
        solution.addcmul_(step, direction)
        residual.addcmul_(step, image, value=-1)
        preconditioned = _vcycle(levels, residual.float()).to(right.dtype)
        following = (residual * preconditioned).sum(1)
        ratio = torch.where(active, following / product.clamp_min(tiny), 0.0)[:, None]
        direction, product = torch.addcmul(preconditioned, ratio, direction), following
    worst = (residual.norm(dim=1) / right.norm(dim=1).clamp_min(1e-30)).max()
    log.warning("imputation stopped after %d iterations at residual %.1e", MAX_ITERATIONS, worst)
    return solution
