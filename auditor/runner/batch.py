"""One batch of the stream: maps, scores, interventions and the maps of the answers a
background swap broke, turned into per-sample rows; evidence is offered to the exemplars."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from auditor.attribution.engine import Attribution, compute
from auditor.attribution.precision import autocast
from auditor.config import AuditConfig
from auditor.data.dataset import parse_skip
from auditor.data.entries import Record, SkipReason
from auditor.data.transforms import AuditTransform
from auditor.detect.interventions import DonorPool
from auditor.detect.views import Behaviour, Intervention, active, behaviour, columns
from auditor.models import TargetLayer
from auditor.runner.exemplars import BrokenSwaps, ClassEvidence, ScoredBatch, collect_evidence
from auditor.runner.sample import InterventionSample
from auditor.runner.timing import Phases
from auditor.scoring import METRICS, chance_corrected, pointing_zone, score_all

log = logging.getLogger(__name__)


def sample_columns(interventions: Sequence[Intervention]) -> list[str]:
    """The columns of ``samples.parquet`` in an audit running ``interventions``."""
    return [
        "sample", "image_id", "file_name", "label", "label_name", "prediction", "correct",
        "method", *METRICS, "mask_fraction", "swap_chance_corrected", *columns(interventions),
        "skip_reason", "skip_detail",
    ]  # fmt: skip


def audit_batch(
    net: torch.nn.Module,
    batch: dict[str, Any],
    records: list[Record],
    layer: TargetLayer | None,
    transform: AuditTransform,
    evidence: dict[int, ClassEvidence],
    config: AuditConfig,
    pool: DonorPool | None,
    phases: Phases | None = None,
    sample: InterventionSample | None = None,
) -> list[dict[str, Any]]:
    clock = phases or Phases()
    skips = list(batch["skip"])
    rows = [skip_row(int(i), records[int(i)], s) for i, s in zip(batch["index"], skips) if s]
    keep = torch.tensor([not s for s in skips])
    if not keep.any():
        return rows
    device = next(net.parameters()).device
    # copy whole (pinned) tensors, then select on the device: selecting first would make an
    # unpinned copy and turn the non-blocking transfer into a blocking one
    at = keep.nonzero().flatten().to(device)
    inputs = batch["inputs"].to(device, non_blocking=True).index_select(0, at)
    if config.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    masks = batch["masks"].to(device, non_blocking=True).index_select(0, at)
    targets = batch["targets"].to(device, non_blocking=True).index_select(0, at)
    indices = batch["index"][keep].tolist()
    valid = (
        ~batch["ignore"].to(device, non_blocking=True).index_select(0, at)
        if "ignore" in batch
        else None
    )
    with clock.phase("attribution", device):
        result = _attribution(net, inputs, targets, config.attributed, layer, config)
    unusable = nonfinite(result)
    if any(unusable):
        rows += [skip_row(i, records[i], why) for i, why in zip(indices, unusable) if why]
        kept = [j for j, why in enumerate(unusable) if why is None]
        if not kept:
            return rows
        at = torch.tensor(kept, device=device)
        inputs, masks, targets = (t.index_select(0, at) for t in (inputs, masks, targets))
        valid = None if valid is None else valid.index_select(0, at)
        indices = [indices[j] for j in kept]
        result = Attribution(
            {m: maps.index_select(0, at) for m, maps in result.maps.items()},
            result.logits.index_select(0, at),
            result.partial,
        )
    audited = {m: result.maps[m] for m in config.methods}
    predictions = result.logits.argmax(1)
    with clock.phase("scoring", device):
        zone = pointing_zone(masks)  # the same for every method
        scores = {m: score_all(maps, masks, valid, zone=zone) for m, maps in audited.items()}
    label_probability = result.logits.float().softmax(1).gather(1, targets[:, None])[:, 0]
    acts: dict[str, list[Any]] = {"prob_label": label_probability.tolist()}
    broken = None
    if pool is not None:
        interventions = active(config.extra_interventions)
        labels = [records[i].label for i in indices]
        chosen = (
            torch.ones(len(indices), dtype=torch.bool)
            if sample is None
            else sample.interventions.chosen(indices, labels)
        )
        picked = chosen.nonzero().flatten().tolist()
        if picked:
            part = _Part(picked, len(indices), device)
            p_inputs, p_masks, p_targets, p_predictions = part.of(
                inputs, masks, targets, predictions
            )
            keys = torch.tensor(indices)[chosen]
            with clock.phase("interventions", device), autocast(device, config.precision):
                b = behaviour(net, p_inputs, p_masks, p_targets, keys, pool, interventions)
                acts |= part.columns(b.columns())
            with clock.phase("broken_swaps", device):
                mapped = None
                if sample is not None:
                    mapped = sample.broken_swaps.chosen(keys.tolist(), [labels[j] for j in picked])
                p_valid = None if valid is None else part.of(valid)[0]
                broken = part.positions_of(_broken_swaps(
                    net, b, p_targets, p_predictions, p_masks, p_valid, layer, config, mapped
                ))  # fmt: skip
        for method in config.methods:
            scores[method]["swap_chance_corrected"] = _per_sample(broken, method, len(indices))
    predicted = predictions.tolist()  # one transfer for the batch, not one per image
    for j, index in enumerate(indices):
        extra = {name: values[j] for name, values in acts.items()}
        rows += _sample_rows(index, records[index], predicted[j], scores, j, extra)
    scored = ScoredBatch(
        inputs, masks, audited, targets, predictions, indices, scores, acts, broken,
        clustered=result.maps[config.subgroup_method] if config.subgroup_maps else None,
        valid=valid,
    )  # fmt: skip
    with clock.phase("evidence", device):
        collect_evidence(
            evidence, scored, records, transform, method=config.primary,
            keep=config.exemplars_per_class,
        )  # fmt: skip
    return rows


def nonfinite(result: Attribution) -> list[str | None]:
    """Per image, why it cannot be scored (a ``reason:detail`` skip) or None: logits or a
    map holding NaN or infinity give no answer, and counting one (argmax of NaN is class 0)
    would be a silent wrong result."""
    logits = result.logits.float()
    bad_logits = (~logits.isfinite().all(1)).tolist()
    bad_maps = {m: (~maps.flatten(1).isfinite().all(1)).tolist() for m, maps in result.maps.items()}
    why: list[str | None] = []
    for j, bad in enumerate(bad_logits):
        if bad:
            values = "NaN" if logits[j].isnan().any() else "infinite"
            why.append(
                f"{SkipReason.NONFINITE_LOGITS}:the model returned {values} logits for this image"
            )
            continue
        methods = ", ".join(m for m, flags in bad_maps.items() if flags[j])
        detail = f"the {methods} map holds NaN or infinite values"
        why.append(f"{SkipReason.NONFINITE_MAP}:{detail}" if methods else None)
    return why


class HalvingOnOOM:
    """A batch step (:func:`audit_batch`), retried in halves when the device runs out of
    memory: a batch that does not fit is split (recursively, down to one image) and its
    halves audited in order, so no finished batch is lost and the rows are the same. Said
    once, as a warning."""

    def __init__(self) -> None:
        self.warned = False

    def __call__(
        self, batch: dict[str, Any], step: Callable[[dict[str, Any]], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """``step(batch)``, or ``step`` on its halves if the batch does not fit."""
        try:
            return step(batch)
        except torch.OutOfMemoryError:
            n = len(batch["index"])
            if n <= 1:
                raise
            if not self.warned:
                log.warning("Out of memory at a batch of %d images: continuing in halves.", n)
                self.warned = True
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = (n + 1) // 2
            return [
                *self(split_batch(batch, 0, half), step),
                *self(split_batch(batch, half, n), step),
            ]


def split_batch(batch: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """Samples ``start:stop`` of a collated batch (tensors and lists alike)."""
    return {k: v[start:stop] if isinstance(v, torch.Tensor | list) else v for k, v in batch.items()}


@dataclass(frozen=True)
class _Part:
    """The images of a batch at ``picked`` (its positions): selects them from batch tensors
    and scatters per-image results back to the batch's ``n`` positions."""

    picked: list[int]
    n: int
    device: torch.device

    @property
    def whole(self) -> bool:
        return len(self.picked) == self.n

    def of(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.whole:
            return tensors
        at = torch.tensor(self.picked, device=self.device)
        return tuple(t.index_select(0, at.to(t.device)) for t in tensors)

    def columns(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Per-image lists of the part as lists over the batch, None where not picked."""
        if self.whole:
            return columns
        out = {}
        for name, values in columns.items():
            full: list[Any] = [None] * self.n
            for j, value in zip(self.picked, values):
                full[j] = value
            out[name] = full
        return out

    def positions_of(self, broken: BrokenSwaps | None) -> BrokenSwaps | None:
        """``broken`` with its positions in the part turned into positions in the batch."""
        if broken is None or self.whole:
            return broken
        return dataclasses.replace(broken, positions=[self.picked[p] for p in broken.positions])


def _broken_swaps(
    net: torch.nn.Module,
    b: Behaviour,
    targets: torch.Tensor,
    predictions: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor | None,
    layer: TargetLayer | None,
    config: AuditConfig,
    sampled: torch.Tensor | None = None,
) -> BrokenSwaps | None:
    """The swapped images whose right answer the swap broke (those ``sampled``, Tensor[N]
    bool, when given), with the maps of the new prediction and their C. The object keeps its
    place and mask in the swapped image, so a negative C says the wrong answer was read off
    the background rather than caused by the pasted object's edge."""
    broken = b.broken(targets, predictions)
    if sampled is not None:
        broken &= sampled.to(broken.device, non_blocking=True)
    if not broken.any():
        return None
    inputs, new = b.swapped_inputs[broken], b.swapped[broken]
    result = _attribution(net, inputs, new, config.methods, layer, config)
    picked = None if valid is None else valid[broken]
    return BrokenSwaps(
        positions=broken.nonzero().flatten().tolist(),
        inputs=inputs,
        maps=result.maps,
        predictions=new,
        scores={
            m: chance_corrected(maps, masks[broken], picked).tolist()
            for m, maps in result.maps.items()
        },
    )


def _attribution(
    net: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    methods: tuple[str, ...],
    layer: TargetLayer | None,
    config: AuditConfig,
) -> Attribution:
    """``methods``' maps of ``targets`` at the audit's layer and precision."""
    return compute(net, inputs, targets, methods=methods,
                   target_layer=layer,
                   precision=config.precision)  # fmt: skip


def _per_sample(broken: BrokenSwaps | None, method: str, n: int) -> list[float]:
    """A method's C of the broken swaps at their batch positions, NaN elsewhere."""
    values = [float("nan")] * n
    if broken is not None:
        for position, value in zip(broken.positions, broken.scores[method]):
            values[position] = value
    return values


def _sample_rows(
    index: int,
    record: Record,
    prediction: int,
    scores: dict[str, dict[str, list[float]]],
    j: int,
    extra: dict[str, int],
) -> list[dict[str, Any]]:
    base = _base_row(index, record) | {
        "prediction": prediction,
        "correct": prediction == record.label,
    }
    base |= extra
    return [
        base
        | {"method": method}
        | {name: values[j] for name, values in per.items()}
        | {"skip_reason": None, "skip_detail": None}
        for method, per in scores.items()
    ]


def skip_row(index: int, record: Record, skip: str) -> dict[str, Any]:
    reason, detail = parse_skip(skip)
    nan = float("nan")
    return _base_row(index, record) | {
        "prediction": -1, "correct": False, "method": None, "mask_fraction": nan,
        "swap_chance_corrected": nan,
        **dict.fromkeys(METRICS, nan), "pred_swapped": None, "donor_label": None,
        "pred_background_only": None, "pred_same_class": None,
        "skip_reason": reason, "skip_detail": detail,
    }  # fmt: skip


def _base_row(index: int, record: Record) -> dict[str, Any]:
    return {
        "sample": index, "image_id": record.image_id, "file_name": str(record.path),
        "label": record.label, "label_name": record.label_name,
    }  # fmt: skip
