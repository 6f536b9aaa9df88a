"""Which images get the costly per-image work: a seeded sample of each class, decided by a
hash of the image's dataset position, so it depends on neither the batch nor the rank."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from auditor.config import AuditConfig


@dataclass(frozen=True)
class ClassSample:
    """A seeded sample of each class's images: an image of class ``c`` is in with
    probability ``rates[c]`` (a cap over the class's size, at most 1), decided by a hash of
    (seed, stream, dataset position), so the choice depends on neither the batch nor the
    rank. A class of any size then costs about ``cap`` images' work."""

    rates: tuple[float, ...]
    seed: int
    stream: int

    @classmethod
    def of(cls, sizes: np.ndarray, cap: float | None, *, seed: int, stream: int) -> ClassSample:
        """``sizes``: images per class; ``cap``: about the most kept per class (None: all)."""
        rates = np.ones(len(sizes)) if cap is None else np.minimum(1.0, cap / np.maximum(sizes, 1))
        return cls(tuple(float(r) for r in rates), seed, stream)

    def chosen(self, positions: Sequence[int], labels: Sequence[int]) -> torch.Tensor:
        """Which of the images at dataset ``positions`` (of class ``labels``; an unknown
        label, below 0, is always in) are in the sample: Tensor[N] bool on the CPU."""
        rates = np.asarray([self.rates[c] if c >= 0 else 1.0 for c in labels], dtype=np.float64)
        draws = uniform_hash(self.seed, self.stream, np.asarray(positions, dtype=np.uint64))
        return torch.from_numpy((rates >= 1.0) | (draws < rates))


def uniform_hash(seed: int, stream: int, positions: np.ndarray) -> np.ndarray:
    """A uniform draw in [0, 1) per position, a pure function of (seed, stream, position):
    the splitmix64 finaliser of their sum (Steele et al. 2014), vectorised."""
    mix = np.uint64((seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) % 2**64)
    with np.errstate(over="ignore"):
        x = positions.astype(np.uint64) + mix
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


@dataclass(frozen=True)
class InterventionSample:
    """Which images get the interventions (about ``intervention_images`` per class; every
    image when 0) and, of their broken swaps, which get maps (about ``broken_swap_maps`` per
    class). The interventions answer class-level questions, so a bounded sample of a large
    class answers them as well as all of it would, at a cost that stops growing with the
    class."""

    interventions: ClassSample
    broken_swaps: ClassSample

    @classmethod
    def of(cls, labels: Sequence[int], classes: int, config: AuditConfig) -> InterventionSample:
        known = np.asarray([label for label in labels if label >= 0], dtype=np.int64)
        sizes = np.bincount(known, minlength=classes)
        seed = config.detect.seed
        cap = config.intervention_images or None  # 0: every image
        interventions = ClassSample.of(sizes, cap, seed=seed, stream=14)
        intervened = sizes * np.asarray(interventions.rates)
        broken = ClassSample.of(intervened, config.broken_swap_maps, seed=seed, stream=15)
        return cls(interventions, broken)
