"""Per-sample localisation scores: how much of a map's mass falls on the object.

Pure, batched tensor functions. ``maps`` are non-negative and never min-max normalised
before scoring (normalising changes the ratio). Degenerate samples give NaN, never a fake
value: an all-zero map, an empty mask, or a mask that covers the whole image.
"""

from __future__ import annotations

import torch


def energy_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """E = sum(L*M) / sum(L), the fraction of attribution mass on the object.

    maps (Tensor[N, H, W] >= 0), masks (Tensor[N, H, W] bool) -> Tensor[N] (NaN if sum(L) == 0)
    """
    maps = maps.double()
    total = maps.flatten(1).sum(1)
    inside = (maps * masks).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.nan).to(torch.float32)


def mask_fraction(masks: torch.Tensor) -> torch.Tensor:
    """a = |M| / |image|. masks (Tensor[N, H, W] bool) -> Tensor[N]"""
    return masks.flatten(1).float().mean(1)


def chance_corrected(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """C = (E - a) / (1 - a): 0 for a uniform map, 1 when all mass is on the object, negative
    when the background gets more mass per pixel than the object.

    maps, masks (Tensor[N, H, W]) -> Tensor[N] (NaN for a zero map, empty or full mask)
    """
    energy = energy_inside(maps, masks).double()
    area = mask_fraction(masks).double()
    valid = (area > 0) & (area < 1)
    score = (energy - area) / (1 - area).clamp_min(1e-12)
    return torch.where(valid, score, torch.nan).to(torch.float32)
