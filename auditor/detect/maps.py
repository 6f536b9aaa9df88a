"""Maps made small and kept bounded: each map pooled to a ``GRID`` x ``GRID`` grid with unit
mass (what subgroups cluster and hotspots search), and :class:`MapSample`, a bounded seeded
sample of them per class that depends neither on the batch order nor on a resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

GRID = 16


def pooled(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """maps (Tensor[N, H, W], non-negative) -> (Tensor[N, GRID * GRID] float32: each map
    pooled to the grid and scaled to sum 1, an all-zero map staying zero; Tensor[N, 1]: each
    map's pooled total), on the maps' device."""
    grid = F.adaptive_avg_pool2d(maps.detach().float()[:, None], GRID).flatten(1)
    total = grid.sum(1, keepdim=True)
    return grid / total.clamp_min(1e-12), total


def small_maps(maps: torch.Tensor) -> torch.Tensor:
    """maps (Tensor[N, H, W], non-negative) -> Tensor[N, GRID * GRID] float32 on the CPU, each
    row pooled to the grid and scaled to sum 1 (an all-zero map stays zero)."""
    return pooled(maps)[0].cpu()


@dataclass
class MapSample:
    """At most ``keep`` small maps of one class: the images with the smallest seeded random
    keys (bottom-k sampling), a uniform sample whatever the order they arrive in. An
    :class:`~auditor.accumulate.Accumulator`: merged, it is the sample of both streams."""

    keep: int
    seed: int
    keys: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    maps: list[torch.Tensor] = field(default_factory=list)

    def update(self, samples: list[int], maps: torch.Tensor) -> None:
        """samples (dataset positions) with their small maps (Tensor[n, GRID * GRID])."""
        for sample, small in zip(samples, maps):
            key = float(np.random.default_rng([self.seed, sample]).random())
            if len(self.keys) < self.keep:
                self._insert(key, sample, small)
            elif self.keep and key < max(self.keys):
                drop = int(np.argmax(self.keys))
                for column in (self.keys, self.samples, self.maps):
                    column.pop(drop)
                self._insert(key, sample, small)

    def empty(self) -> MapSample:
        return MapSample(self.keep, self.seed)

    def merge(self, other: MapSample) -> None:
        if other.samples:
            self.update(other.samples, torch.stack(other.maps))

    def state(self) -> dict[str, Any]:
        samples, maps = self.ordered()
        return {"samples": samples, "maps": maps}

    def load(self, state: dict[str, Any]) -> None:
        self.update([int(s) for s in state["samples"]], state["maps"])

    def _insert(self, key: float, sample: int, small: torch.Tensor) -> None:
        self.keys.append(key)
        self.samples.append(sample)
        self.maps.append(small.clone())

    def ordered(self) -> tuple[list[int], torch.Tensor]:
        """(sample positions in dataset order, their maps Tensor[n, GRID * GRID])."""
        order = np.argsort(self.samples, kind="stable")
        samples = [self.samples[i] for i in order]
        maps = torch.stack([self.maps[i] for i in order]) if samples else torch.zeros(0, GRID**2)
        return samples, maps
