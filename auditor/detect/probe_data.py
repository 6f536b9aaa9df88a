"""The probe's input: every record loaded at the probe's size, skipped with a reason or
described by its two views' features (:mod:`auditor.detect.probe_features`), and the
settings of the whole probe (:class:`ProbeConfig`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from auditor.config import DetectConfig
from auditor.data.dataset import AuditDataset, parse_skip
from auditor.data.entries import Record, SkipReason
from auditor.data.transforms import AuditTransform
from auditor.detect.probe_features import (
    background_region,
    background_view,
    describe,
    object_geometry,
    object_view,
)
from auditor.errors import ConfigError

NO_BACKGROUND = SkipReason.NO_BACKGROUND


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of the probe (the rule is in :mod:`auditor.detect.probe`).

    ``image_size``: the side images are loaded at; ``folds``, ``seed``: the stratified
    k-fold cross-validation; ``min_background``: the smallest share of the image left to
    describe the background (else the image is skipped as ``no_background``);
    ``background_side``: the side, as a share of the image side, of the square around the
    object left out of the background's features; ``size_ratio``, ``spread_ratio``,
    ``max_offset``: the geometry warnings (:mod:`auditor.detect.probe_geometry`);
    ``detect``: ``min_n``, ``alpha``, ``min_gap`` and ``confidence`` of the rule.
    """

    image_size: int = 64
    folds: int = 5
    seed: int = 0
    batch_size: int = 64
    min_background: float = 0.1
    background_side: float = 0.7
    size_ratio: float = 3.0
    spread_ratio: float = 0.5
    max_offset: float = 0.2
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        checks = {
            "image_size": self.image_size >= 8,
            "folds": self.folds >= 2,
            "batch_size": self.batch_size >= 1,
            "min_background": 0 <= self.min_background < 1,
            "background_side": 0 <= self.background_side < 1,
            "size_ratio": self.size_ratio > 1,
            "spread_ratio": 0 < self.spread_ratio < 1,
            "max_offset": 0 < self.max_offset < 1,
        }
        ranges = {"image_size": ">= 8", "folds": ">= 2", "batch_size": ">= 1",
                  "min_background": "in [0, 1)", "background_side": "in [0, 1)",
                  "size_ratio": "> 1",
                  "spread_ratio": "in (0, 1)", "max_offset": "in (0, 1)"}  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"Expected {name} {ranges[name]}, got {getattr(self, name)}.")


@dataclass(frozen=True)
class Skipped:
    image_id: str
    file: str
    reason: str
    detail: str


Example = tuple[np.ndarray, np.ndarray]
"""An image's background-only and object-only views, uint8 ``[S, S, 3]``, for the report."""


@dataclass(frozen=True)
class ProbeData:
    """The usable images, described: ``labels`` (int[N]), ``background`` and ``objects``
    features (float[N, F]), ``geometry`` (float[N, 3]: area share, centroid x, centroid y);
    every other record is in ``skipped``. ``examples``: the views of each class's first
    ``EXAMPLES`` usable images."""

    labels: np.ndarray
    background: np.ndarray
    objects: np.ndarray
    geometry: np.ndarray
    skipped: list[Skipped]
    n_images: int
    examples: dict[int, list[Example]] = field(default_factory=dict)


EXAMPLES = 2

ViewFeatures = Callable[[torch.Tensor], torch.Tensor]
"""Views in [0, 1] (``Tensor[n, 3, S, S]``) -> their features (``Tensor[n, F]``)."""


def collect(
    records: Sequence[Record], *, config: ProbeConfig, features: ViewFeatures | None = None
) -> ProbeData:
    """Load every record at ``image_size`` (no normalisation) and describe its two views:
    with the fixed features, or, given ``features`` (such as a model's penultimate layer),
    with those, of the background-only view with the object filled as the interventions
    fill it and of the object-only view."""
    dataset = AuditDataset(records, AuditTransform(config.image_size, "none"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, num_workers=0)
    parts, skipped = [], []
    examples: dict[int, list[Example]] = {}
    with torch.no_grad():
        for batch in loader:
            part, skips, keep = _describe_batch(batch, records, config, features)
            parts.append(part)
            skipped.extend(skips)
            _add_examples(examples, batch, keep)
    if not parts:
        parts = [(np.zeros(0, np.int64), np.zeros((0, 1)), np.zeros((0, 1)), np.zeros((0, 3)))]
    labels, background, objects, geometry = (np.concatenate(column) for column in zip(*parts))
    return ProbeData(
        labels, background, objects, geometry, skipped, n_images=len(records), examples=examples
    )


def _describe_batch(
    batch: dict[str, Any],
    records: Sequence[Record],
    config: ProbeConfig,
    features: ViewFeatures | None,
) -> tuple[tuple[np.ndarray, ...], list[Skipped], torch.Tensor]:
    """A batch's usable samples described, its skips, and the usable positions."""
    region = background_region(batch["masks"], batch["ignore"], side=config.background_side)
    share = region.flatten(1).float().mean(1)
    skips, keep = [], []
    for j, (index, skip) in enumerate(zip(batch["index"].tolist(), batch["skip"])):
        record = records[index]
        if not skip and share[j] < config.min_background:
            skip = f"{NO_BACKGROUND}:{100 * share[j]:.0f}% of the image is left around the object"
        if skip:
            reason, detail = parse_skip(skip)
            skips.append(Skipped(record.image_id, str(record.path), reason, detail))
        else:
            keep.append(j)
    at = torch.tensor(keep, dtype=torch.long)
    inputs, masks, ignore = batch["inputs"][at], batch["masks"][at], batch["ignore"][at]
    objects = object_view(inputs, masks, ignore)
    if features is None:
        background = describe(inputs, region[at])  # = the filled view's, over region
        described = describe(objects)
    else:
        background = features(background_view(inputs, masks, ignore))
        described = features(objects)
    part = (
        batch["targets"][at].numpy().astype(np.int64),
        background.double().numpy(),
        described.double().numpy(),
        object_geometry(masks).double().numpy(),
    )
    return part, skips, at


def _add_examples(
    examples: dict[int, list[Example]], batch: dict[str, Any], keep: torch.Tensor
) -> None:
    """Append the views of usable samples to their class's examples, up to ``EXAMPLES``."""
    for at, label in zip(keep.tolist(), batch["targets"][keep].tolist()):
        shown = examples.setdefault(label, [])
        if len(shown) >= EXAMPLES:
            continue
        inputs, masks, ignore = (batch[key][at : at + 1] for key in ("inputs", "masks", "ignore"))
        background = background_view(inputs, masks, ignore)[0]
        shown.append((_pixels(background), _pixels(object_view(inputs, masks, ignore)[0])))


def _pixels(view: torch.Tensor) -> np.ndarray:
    """Tensor[3, S, S] in [0, 1] -> uint8 [S, S, 3]."""
    return (view.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
