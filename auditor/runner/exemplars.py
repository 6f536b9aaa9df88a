"""Bounded per-class evidence kept while streaming: the most background-reliant images
(thumbnails, masks and maps), the background-swapped images whose right answer the swap
broke, with the maps of their new prediction, and running sums for the class's mean map and
mean mask."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from auditor.accumulate import Composite, Keyed, Total
from auditor.data.entries import Record
from auditor.data.transforms import AuditTransform
from auditor.detect.hotspot import excluded_cells, off_object_maps
from auditor.detect.maps import MapSample, small_maps

THUMBNAIL = 96
MEAN_SIZE = 64


@dataclass
class Exemplar:
    score: float
    image_id: str
    file_name: str
    label: int
    prediction: int
    image: torch.Tensor  # uint8 [3, t, t]
    mask: torch.Tensor  # bool [t, t]
    maps: dict[str, torch.Tensor]  # float16 [t, t] per method, each scaled to max 1
    scores: dict[str, float]
    interventions: dict[str, Any]  # predicted class and label probability per intervention

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Exemplars:
    """The ``keep`` images with the lowest score (most background-reliant), the image's
    dataset position breaking ties, so the choice depends neither on the order they come in
    nor on how the stream was split (an :class:`~auditor.accumulate.Accumulator`)."""

    keep: int
    heap: list[tuple[float, int, Exemplar]] = field(default_factory=list)

    def update(self, exemplar: Exemplar, position: int) -> None:
        self._push((-exemplar.score, position, exemplar))

    def ranked(self) -> list[Exemplar]:
        """Lowest score first."""
        return [e for _, _, e in sorted(self.heap, key=lambda t: (-t[0], t[1]))]

    def empty(self) -> Exemplars:
        return Exemplars(self.keep)

    def merge(self, other: Exemplars) -> None:
        for item in other.heap:
            self._push(item)

    def state(self) -> list[list[Any]]:
        return [[score, position, e.to_dict()] for score, position, e in self.heap]

    def load(self, state: list[list[Any]]) -> None:
        for score, position, e in state:
            self._push((score, position, Exemplar(**e)))

    def _push(self, item: tuple[float, int, Exemplar]) -> None:
        if len(self.heap) < self.keep:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)


@dataclass
class ClassEvidence(Composite):
    """Running evidence for one class, bounded in memory: its exemplars, the swapped images
    whose answer the swap broke, the sums behind its mean maps and mean mask, a sample of
    its small maps (for subgroups) and of its off-object maps per method (for hotspots)."""

    exemplars: Exemplars
    broken: Exemplars
    maps: Keyed[Total]  # per method: each map's share of its mass, at MEAN_SIZE
    masks: Total  # the masks at MEAN_SIZE, and how many images
    small: MapSample
    off_object: Keyed[MapSample]

    @classmethod
    def bounded(
        cls, keep: int, *, small: MapSample | None = None,
        off_object: dict[str, MapSample] | None = None,
    ) -> ClassEvidence:  # fmt: skip
        """No evidence yet: ``keep`` exemplars of each kind, the given map samples."""
        return cls(
            Exemplars(keep), Exemplars(keep), Keyed(make=Total), Total(),
            small or MapSample(0, 0), Keyed(off_object),
        )  # fmt: skip

    def add_means(self, maps: dict[str, torch.Tensor], masks: torch.Tensor) -> None:
        """maps {method: Tensor[n, H, W]}, masks (Tensor[n, H, W] bool) of this class's images."""
        self.masks.update(_resize(masks.float(), MEAN_SIZE).sum(0).cpu(), masks.shape[0])
        for method, m in maps.items():
            share = m / m.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
            self.maps.at(method).update(_resize(share, MEAN_SIZE).sum(0).cpu(), masks.shape[0])

    def means(self) -> dict[str, torch.Tensor]:
        mask = self.masks.mean()
        if mask is None:
            return {}
        maps = {m: total.mean() for m, total in self.maps.items()}  # each of masks.n images
        return {**{m: v for m, v in maps.items() if v is not None}, "mask": mask}


def off_object_samples(methods: tuple[str, ...], keep: int, seed: int) -> dict[str, MapSample]:
    """One bounded sample of off-object maps per method (none when ``keep`` is 0), all with
    the same keys, so every method keeps the same images."""
    return {m: MapSample(keep, seed) for m in methods} if keep else {}


def thumbnail(images: torch.Tensor) -> torch.Tensor:
    """Tensor[n, 3, H, W] in [0, 1] -> uint8 Tensor[n, 3, t, t] with t <= THUMBNAIL."""
    return (_resize(images, THUMBNAIL).clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def thumbnail_maps(maps: torch.Tensor) -> torch.Tensor:
    """Tensor[n, H, W] -> float16 Tensor[n, t, t], each scaled to max 1 for display only."""
    small = _resize(maps, THUMBNAIL)
    peak = small.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return (small / peak).to(torch.float16).cpu()


def thumbnail_masks(masks: torch.Tensor) -> torch.Tensor:
    return _resize(masks.float(), THUMBNAIL, mode="nearest").bool().cpu()


def _resize(x: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    squeeze = x.dim() == 3
    x = x[:, None] if squeeze else x
    if x.shape[-1] > size or x.shape[-2] > size:
        x = F.interpolate(x.float(), size=(size, size), mode=mode)
    return x[:, 0] if squeeze else x


@dataclass(frozen=True)
class BrokenSwaps:
    """The background-swapped images of a batch whose right answer the swap broke."""

    positions: list[int]  # into the batch
    inputs: torch.Tensor  # Tensor[b, 3, S, S], the swapped images
    maps: dict[str, torch.Tensor]  # method -> Tensor[b, S, S], maps of the new prediction
    predictions: torch.Tensor  # Tensor[b], the new (wrong) predictions
    scores: dict[str, list[float]]  # method -> b values of C


@dataclass(frozen=True)
class ScoredBatch:
    """The usable samples of one batch with everything computed for them."""

    inputs: torch.Tensor  # Tensor[n, 3, S, S]
    masks: torch.Tensor  # Tensor[n, S, S] bool
    maps: dict[str, torch.Tensor]  # method -> Tensor[n, S, S]
    targets: torch.Tensor  # Tensor[n]
    predictions: torch.Tensor  # Tensor[n]
    indices: list[int]  # dataset positions
    scores: dict[str, dict[str, list[float]]]  # method -> metric -> n values
    acts: dict[str, list[Any]]  # intervention column -> n predictions or label probabilities
    broken: BrokenSwaps | None = None
    clustered: torch.Tensor | None = None  # Tensor[n, S, S], the subgroup method's maps
    valid: torch.Tensor | None = None  # Tensor[n, S, S] bool, the pixels not ignored


def collect_evidence(
    evidence: dict[int, ClassEvidence],
    batch: ScoredBatch,
    records: list[Record],
    transform: AuditTransform,
    *,
    method: str,
    keep: int,
) -> None:
    """Add a scored batch to the per-class means, offer its subgroup maps and its off-object
    maps to the class's map samples, and offer its ``keep`` worst samples per class, by
    ``method``'s C, as exemplars."""
    primary = batch.scores[method]["chance_corrected"]
    for label in batch.targets.unique().tolist():
        picked = (batch.targets == label).nonzero().flatten()
        maps = {m: v[picked] for m, v in batch.maps.items()}
        evidence[label].add_means(maps, batch.masks[picked])
        if batch.clustered is not None:
            samples = [batch.indices[j] for j in picked.tolist()]
            evidence[label].small.update(samples, small_maps(batch.clustered[picked]))
        if evidence[label].off_object:
            _offer_off_object(evidence[label], batch, picked)
    candidates = _worst_per_class(batch.targets, primary, keep)
    originals = _exemplars(
        batch.inputs, batch.masks, batch.maps, candidates, transform,
        {m: s["chance_corrected"] for m, s in batch.scores.items()},
    )  # fmt: skip
    for j, (thumb, mask, maps, scores) in zip(candidates, originals):
        record = records[batch.indices[j]]
        exemplar = Exemplar(
            primary[j], record.image_id, str(record.path.name), record.label,
            int(batch.predictions[j]), thumb, mask, maps, scores,
            {name: values[j] for name, values in batch.acts.items()},
        )  # fmt: skip
        evidence[record.label].exemplars.update(exemplar, batch.indices[j])
    if batch.broken is not None:
        _offer_broken(evidence, batch, batch.broken, records, transform, method=method, keep=keep)


def _offer_off_object(ev: ClassEvidence, batch: ScoredBatch, picked: torch.Tensor) -> None:
    """Offer the off-object maps of the batch's images at ``picked`` (of one class)."""
    samples = [batch.indices[j] for j in picked.tolist()]
    valid = None if batch.valid is None else batch.valid[picked]
    cells = excluded_cells(batch.masks[picked], valid)
    for method, kept in ev.off_object.items():
        kept.update(samples, off_object_maps(batch.maps[method][picked], cells))


def _offer_broken(
    evidence: dict[int, ClassEvidence],
    batch: ScoredBatch,
    broken: BrokenSwaps,
    records: list[Record],
    transform: AuditTransform,
    *,
    method: str,
    keep: int,
) -> None:
    """Offer the swapped images whose broken answer's map sits furthest off the object."""
    primary = broken.scores[method]
    targets = batch.targets[broken.positions]
    candidates = _worst_per_class(targets, primary, keep)
    masks = batch.masks[broken.positions]
    chosen = _exemplars(
        broken.inputs, masks, broken.maps, candidates, transform, broken.scores
    )  # fmt: skip
    for k, (thumb, mask, maps, scores) in zip(candidates, chosen):
        j = broken.positions[k]
        record = records[batch.indices[j]]
        exemplar = Exemplar(
            primary[k], record.image_id, str(record.path.name), record.label,
            int(broken.predictions[k]), thumb, mask, maps, scores, {},
        )  # fmt: skip
        evidence[record.label].broken.update(exemplar, batch.indices[j])


def _exemplars(
    inputs: torch.Tensor,
    masks: torch.Tensor,
    maps: dict[str, torch.Tensor],
    rows: list[int],
    transform: AuditTransform,
    scores: dict[str, list[float]],
) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, float]]]:
    """Thumbnail, mask, maps and per-method score of each of ``rows``, bounded in size."""
    if not rows:
        return []
    pick = torch.tensor(rows, device=inputs.device)
    images = thumbnail(transform.denormalize(inputs[pick]))
    small_masks = thumbnail_masks(masks[pick])
    small_maps = {m: thumbnail_maps(v[pick]) for m, v in maps.items()}
    return [
        (
            images[k].clone(),
            small_masks[k].clone(),
            {m: v[k].clone() for m, v in small_maps.items()},
            {m: values[j] for m, values in scores.items()},
        )
        for k, j in enumerate(rows)
    ]


def _worst_per_class(targets: torch.Tensor, primary: list[float], keep: int) -> list[int]:
    """Indices into the batch of each class's ``keep`` lowest finite scores."""
    by_class: dict[int, list[tuple[float, int]]] = {}
    for j, (label, score) in enumerate(zip(targets.tolist(), primary)):
        if score == score:  # not NaN
            by_class.setdefault(label, []).append((score, j))
    return sorted(j for items in by_class.values() for _, j in sorted(items)[:keep])


def evidence_payload(evidence: dict[int, ClassEvidence], names: list[str]) -> dict[str, Any]:
    return {
        "classes": {
            names[i]: {
                "exemplars": [e.to_dict() for e in ev.exemplars.ranked()],
                "broken_exemplars": [e.to_dict() for e in ev.broken.ranked()],
                "means": ev.means(),
            }
            for i, ev in evidence.items()
        }
    }
