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
class ClassEvidence:
    """Running evidence for one class; memory is bounded by ``keep`` exemplars."""

    keep: int
    heap: list[tuple[float, int, Exemplar]] = field(default_factory=list)
    map_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    mask_sum: torch.Tensor | None = None
    count: int = 0
    broken_heap: list[tuple[float, int, Exemplar]] = field(default_factory=list)
    small: MapSample = field(default_factory=lambda: MapSample(0, 0))
    off_object: dict[str, MapSample] = field(default_factory=dict)  # per method, for hotspots

    def add_means(self, maps: dict[str, torch.Tensor], masks: torch.Tensor) -> None:
        """maps {method: Tensor[n, H, W]}, masks (Tensor[n, H, W] bool) of this class's images."""
        self.count += masks.shape[0]
        small_masks = _resize(masks.float(), MEAN_SIZE).sum(0).cpu()
        self.mask_sum = small_masks if self.mask_sum is None else self.mask_sum + small_masks
        for method, m in maps.items():
            share = m / m.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
            small = _resize(share, MEAN_SIZE).sum(0).cpu()
            self.map_sums[method] = self.map_sums.get(method, 0) + small

    def offer(self, exemplar: Exemplar, tiebreak: int, *, broken: bool = False) -> None:
        """Keep the ``keep`` exemplars with the lowest score (most background-reliant), of
        the original images or (``broken``) of the swapped images whose answer broke."""
        self._push(self.broken_heap if broken else self.heap, (-exemplar.score, tiebreak, exemplar))

    def _push(
        self, heap: list[tuple[float, int, Exemplar]], item: tuple[float, int, Exemplar]
    ) -> None:
        if len(heap) < self.keep:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)

    def empty_like(self) -> ClassEvidence:
        """No evidence yet, kept to the same bounds."""
        return ClassEvidence(
            self.keep,
            small=self.small.empty_like(),
            off_object={m: s.empty_like() for m, s in self.off_object.items()},
        )

    def absorb(self, other: ClassEvidence) -> None:
        """Add ``other``'s evidence, of other images of the class (another rank's): the
        exemplars kept are the ``keep`` best of both by the rule of :meth:`offer` (lowest
        score, the image's position breaking ties), the map sample the bottom-k of both, so
        neither depends on the order; only the sums' float rounding does. ``other`` is not
        changed."""
        for item in other.heap:
            self._push(self.heap, item)
        for item in other.broken_heap:
            self._push(self.broken_heap, item)
        for method, total in other.map_sums.items():
            self.map_sums[method] = self.map_sums.get(method, 0) + total
        if other.mask_sum is not None:
            self.mask_sum = (
                other.mask_sum if self.mask_sum is None else self.mask_sum + other.mask_sum
            )
        self.count += other.count
        self.small.absorb(other.small)
        for method, sample in other.off_object.items():
            self.off_object.setdefault(method, sample.empty_like()).absorb(sample)

    def exemplars(self) -> list[Exemplar]:
        return _ranked(self.heap)

    def broken_exemplars(self) -> list[Exemplar]:
        return _ranked(self.broken_heap)

    def state(self) -> dict[str, Any]:
        """Plain values and tensors only, for a ``weights_only`` checkpoint."""
        return {
            "keep": self.keep,
            "heap": _plain(self.heap),
            "map_sums": dict(self.map_sums),
            "mask_sum": self.mask_sum,
            "count": self.count,
            "broken_heap": _plain(self.broken_heap),
            "small": self.small.state(),
            "off_object": {m: s.state() for m, s in self.off_object.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClassEvidence:
        return cls(
            state["keep"],
            _heap(state["heap"]),
            dict(state["map_sums"]),
            state["mask_sum"],
            state["count"],
            _heap(state.get("broken_heap", [])),
            MapSample.from_state(state["small"]) if "small" in state else MapSample(0, 0),
            {m: MapSample.from_state(s) for m, s in state.get("off_object", {}).items()},
        )

    def means(self) -> dict[str, torch.Tensor]:
        if not self.count or self.mask_sum is None:
            return {}
        out = {m: s / self.count for m, s in self.map_sums.items()}
        out["mask"] = self.mask_sum / self.count
        return out


def off_object_samples(methods: tuple[str, ...], keep: int, seed: int) -> dict[str, MapSample]:
    """One bounded sample of off-object maps per method (none when ``keep`` is 0), all with
    the same keys, so every method keeps the same images."""
    return {m: MapSample(keep, seed) for m in methods} if keep else {}


def _ranked(heap: list[tuple[float, int, Exemplar]]) -> list[Exemplar]:
    return [e for _, _, e in sorted(heap, key=lambda t: (-t[0], t[1]))]


def _plain(heap: list[tuple[float, int, Exemplar]]) -> list[list[Any]]:
    return [[score, tiebreak, e.to_dict()] for score, tiebreak, e in heap]


def _heap(items: list[list[Any]]) -> list[tuple[float, int, Exemplar]]:
    heap = [(score, tiebreak, Exemplar(**e)) for score, tiebreak, e in items]
    heapq.heapify(heap)
    return heap


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
            evidence[label].small.offer(samples, small_maps(batch.clustered[picked]))
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
        evidence[record.label].offer(exemplar, tiebreak=batch.indices[j])
    if batch.broken is not None:
        _offer_broken(evidence, batch, batch.broken, records, transform, method=method, keep=keep)


def _offer_off_object(ev: ClassEvidence, batch: ScoredBatch, picked: torch.Tensor) -> None:
    """Offer the off-object maps of the batch's images at ``picked`` (of one class)."""
    samples = [batch.indices[j] for j in picked.tolist()]
    valid = None if batch.valid is None else batch.valid[picked]
    cells = excluded_cells(batch.masks[picked], valid)
    for method, kept in ev.off_object.items():
        kept.offer(samples, off_object_maps(batch.maps[method][picked], cells))


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
        evidence[record.label].offer(exemplar, tiebreak=batch.indices[j], broken=True)


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
                "exemplars": [e.to_dict() for e in ev.exemplars()],
                "broken_exemplars": [e.to_dict() for e in ev.broken_exemplars()],
                "means": ev.means(),
            }
            for i, ev in evidence.items()
        }
    }
