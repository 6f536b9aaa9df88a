"""Fixed, model-free descriptions of images for the data probe (pure tensor functions).

Views, from inputs in [0, 1] (``Tensor[N, 3, S, S]``, loaded with ``normalize="none"``):

- **background only**: the object removed exactly as the audit's interventions remove it
  (:func:`auditor.detect.interventions.remove_object`: the object's bounding box, after
  dilating the mask by 3% of the image side, filled with the image's own surrounding texture).
  Its features are pooled over :func:`background_region`: the pixels outside a square of
  fixed side (``side`` of the image side) around the object's box, or outside the box where
  it is larger (filters only where their whole window lies there). The fill never enters
  the features, which equal the original image's over that region. Both choices close a leak
  of the object's size, measured on planted control data (backgrounds independent of the
  class; triangles the smallest objects, circles the largest): pooled over the whole filled
  view, 160 images at 32 px gave triangles from the background at 0.42 against chance 0.25
  (the filled box's size and seams); on the demo's 1,600 control training images at 64 px,
  pooled outside the box itself, at 0.46 (which pixels a box of that size leaves changes the
  histogram of a background that is not the same everywhere, such as a vertical gradient),
  and outside the fixed square of side 0.7, at 0.28.
- **object only**: the object's mask pixels on a constant mid-grey (0.5) background, so the
  view carries nothing of the image around the object (with box annotations, the box is the
  mask, so the background inside the box stays). Pooled over the whole view, so the object's
  size counts as the object's.

Ignore-region pixels (COCO crowds, the VOC border, padding) are mid-grey in both views and
left out of the background's pooling region.

Features, the same for both views: nothing learned, nothing downloaded (see
:data:`FEATURES`). Geometry: each mask's area share and centroid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from auditor.detect.interventions import bounding_boxes, dilate, margin, remove_object

GREY = 0.5
COLOUR_BINS = 8
EDGE_BOUNDS = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
BANK_FILTERS = 8
BANK_KERNEL = 5
BANK_SEED = 0
VIEWS = (
    "background only: the object's bounding box (mask dilated by 3% of the image side) filled "
    "with the image's own surrounding texture, as in the audit's interventions, described over "
    "the pixels outside a square of fixed side (default 0.7 of the image side) around that box, "
    "or outside the box where it is larger, so that the fill and the object's size never enter "
    "the features; object only: the object's mask pixels on a constant "
    "mid-grey background (with boxes, the whole box), described over the whole view"
)
FEATURES = (
    f"per view {3 * COLOUR_BINS + len(EDGE_BOUNDS) + 1 + 2 * BANK_FILTERS} fixed features: "
    f"per-channel colour histograms ({COLOUR_BINS} equal bins of [0, 1], share of pixels); "
    f"a histogram of the Sobel gradient magnitude of the grey image ({len(EDGE_BOUNDS) + 1} "
    f"bins, edges {', '.join(f'{b:g}' for b in EDGE_BOUNDS)}); a bank of {BANK_FILTERS} random "
    f"{BANK_KERNEL}x{BANK_KERNEL} colour filters (zero mean, unit norm, drawn from a generator "
    f"seeded with {BANK_SEED}), each pooled as mean |response| and (population) standard deviation"
)


def removed_region(masks: torch.Tensor) -> torch.Tensor:
    """The region :func:`remove_object` fills: the dilated mask's bounding box.

    masks (Tensor[N, H, W] bool) -> Tensor[N, H, W] bool
    """
    return bounding_boxes(masks, grow=margin(masks))


def background_region(
    masks: torch.Tensor, ignore: torch.Tensor, *, side: float = 0.7
) -> torch.Tensor:
    """The pixels that describe the background: outside the ignore region and outside a
    rectangle containing the removed region (:func:`removed_region`) whose sides are
    ``side`` times the image's, or the box's where that is longer, centred on the box and
    shifted to lie inside the image. So the pixels left do not depend on the object's size.

    masks, ignore (Tensor[N, H, W] bool) -> Tensor[N, H, W] bool
    """
    box = removed_region(masks)
    rows, cols = _covering(box.any(2), side), _covering(box.any(1), side)
    return ~(rows[:, :, None] & cols[:, None, :]) & ~ignore


def _covering(flags: torch.Tensor, side: float) -> torch.Tensor:
    """Per row of ``flags`` (Tensor[N, L] bool), a run of at least ``side * L`` cells that
    covers its True cells, centred on them and shifted to lie within ``[0, L)``."""
    size = flags.shape[1]
    first = flags.int().argmax(1)
    last = size - 1 - flags.flip(1).int().argmax(1)
    length = torch.clamp(last - first + 1, min=round(side * size))
    start = torch.clamp((first + last + 1 - length) // 2, min=0)
    start = torch.minimum(start, size - length)
    cells = torch.arange(size, device=flags.device)
    return (cells >= start[:, None]) & (cells < (start + length)[:, None])


def background_view(
    inputs: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor
) -> torch.Tensor:
    """The image without its object. inputs (Tensor[N, 3, H, W]), masks and ignore
    (Tensor[N, H, W] bool) -> Tensor[N, 3, H, W]"""
    return _grey_out(remove_object(inputs, masks), ignore)


def object_view(inputs: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """The object alone on mid-grey. inputs (Tensor[N, 3, H, W]), masks and ignore
    (Tensor[N, H, W] bool) -> Tensor[N, 3, H, W]"""
    return _grey_out(inputs, ignore | ~masks)


def _grey_out(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    return torch.where(region[:, None], torch.full_like(inputs, GREY), inputs)


def erode(region: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels whose whole (2 * radius + 1)-square neighbourhood inside the image lies in
    ``region``. region (Tensor[N, H, W] bool) -> Tensor[N, H, W] bool"""
    return ~dilate(~region, radius)


def pooled(values: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``region``'s pixels (0 where the region is empty).

    values (Tensor[N, C, H, W]), region (Tensor[N, H, W] bool) -> Tensor[N, C]
    """
    weights = region[:, None].to(values.dtype)
    return (values * weights).sum((2, 3)) / weights.sum((2, 3)).clamp_min(1)


def histograms(bins: torch.Tensor, region: torch.Tensor, count: int) -> torch.Tensor:
    """Share of ``region``'s pixels in each bin, per image and channel (0 for an empty region).

    bins (Tensor[N, C, H, W] int in [0, count)), region (Tensor[N, H, W] bool)
    -> Tensor[N, C * count]
    """
    n, channels = bins.shape[:2]
    offsets = torch.arange(n * channels, device=bins.device).view(n, channels, 1, 1) * count
    weights = region[:, None].expand_as(bins).to(torch.float64)
    totals = torch.bincount((bins + offsets).flatten(), weights.flatten(), n * channels * count)
    shares = totals.view(n, channels * count) / weights.sum((2, 3)).repeat_interleave(count, 1)
    return shares.nan_to_num(0.0).to(torch.float32)


def colour_histograms(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of ``region``'s pixels per channel in each of ``COLOUR_BINS`` equal bins of [0, 1].

    inputs (Tensor[N, 3, H, W]), region (Tensor[N, H, W] bool) -> Tensor[N, 3 * COLOUR_BINS]
    """
    bins = (inputs.clamp(0, 1) * COLOUR_BINS).long().clamp_max(COLOUR_BINS - 1)
    return histograms(bins, region, COLOUR_BINS).to(inputs.dtype)


def edge_histogram(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of pixels in each bin of the Sobel gradient magnitude of the grey image, over
    the pixels of ``region`` whose 3x3 neighbourhood lies in it.

    inputs (Tensor[N, 3, H, W]), region (Tensor[N, H, W] bool) -> Tensor[N, len(EDGE_BOUNDS) + 1]
    """
    grey = F.pad(inputs.mean(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T])[:, None].to(inputs)
    magnitude = F.conv2d(grey, kernels).square().sum(1).sqrt()
    bounds = torch.tensor(EDGE_BOUNDS, dtype=magnitude.dtype, device=magnitude.device)
    bins = torch.bucketize(magnitude, bounds)[:, None]
    return histograms(bins, erode(region, 1), len(EDGE_BOUNDS) + 1).to(inputs.dtype)


def filter_bank(*, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The fixed random filters: zero mean, unit L2 norm, from a generator seeded with
    ``BANK_SEED``. -> Tensor[BANK_FILTERS, 3, BANK_KERNEL, BANK_KERNEL]"""
    generator = torch.Generator().manual_seed(BANK_SEED)
    bank = torch.randn(BANK_FILTERS, 3, BANK_KERNEL, BANK_KERNEL, generator=generator)
    bank = bank - bank.mean((1, 2, 3), keepdim=True)
    bank = bank / bank.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return bank.to(dtype=dtype, device=device)


def texture_statistics(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Each filter's response pooled as mean |response| and (population) standard deviation,
    over the pixels of ``region`` whose filter window lies in it.

    inputs (Tensor[N, 3, H, W]), region (Tensor[N, H, W] bool) -> Tensor[N, 2 * BANK_FILTERS]
    """
    bank = filter_bank(dtype=inputs.dtype, device=inputs.device)
    padded = F.pad(inputs, (BANK_KERNEL // 2,) * 4, mode="replicate")
    responses = F.conv2d(padded, bank)
    inner = erode(region, BANK_KERNEL // 2)
    mean, mean_square = pooled(responses, inner), pooled(responses.square(), inner)
    std = (mean_square - mean.square()).clamp_min(0).sqrt()
    return torch.cat([pooled(responses.abs(), inner), std], 1)


def describe(inputs: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """All features of :data:`FEATURES`, pooled over ``region`` (default: every pixel).

    inputs (Tensor[N, 3, H, W]), region (Tensor[N, H, W] bool) -> Tensor[N, 48]
    """
    if region is None:
        region = torch.ones_like(inputs[:, 0], dtype=torch.bool)
    parts = (colour_histograms, edge_histogram, texture_statistics)
    return torch.cat([part(inputs, region) for part in parts], 1)


def object_geometry(masks: torch.Tensor) -> torch.Tensor:
    """Per mask: area share of the image, centroid x and y as shares of the image side
    (0 = left/top, 1 = right/bottom); NaN centroid for an empty mask.

    masks (Tensor[N, H, W] bool) -> Tensor[N, 3] float32
    """
    height, width = masks.shape[-2:]
    weights = masks.float()
    area = weights.sum((1, 2))
    ys = (torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5) / width
    cx = (weights.sum(1) * xs).sum(1) / area
    cy = (weights.sum(2) * ys).sum(1) / area
    return torch.stack([area / (height * width), cx, cy], 1)
