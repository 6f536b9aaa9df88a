"""What is explained: per-sample scores to differentiate, built from the targets a user gives.

A target is one of
- class indices, ``Tensor[N]`` or a list of ints (the default: each sample's label);
- ``"prediction"``: each sample's arg-max class;
- multi-label sets: a ``Tensor[N, K]`` of 0/1 (or bool), or a list of index lists; the score
  is the sum of the selected logits;
- a callable ``logits (Tensor[N, K]) -> scores (Tensor[N])``, such as a regression output;
- :class:`LayerFilter`: the mean activation of one filter of an intermediate layer
  (conv-filter saliency).

Class targets become a selection ``Tensor[N, K]`` over the logits, which CAM reuses to
combine the head's class weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from auditor.errors import AttributionError

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayerFilter:
    """Conv-filter saliency: explain the mean activation of ``filter`` in ``layer``'s output.

    ``filter`` is one index for every sample, or ``Tensor[N]`` of indices.
    """

    layer: nn.Module
    filter: int | torch.Tensor


TargetSpec = (
    torch.Tensor
    | Sequence[int]
    | Sequence[Sequence[int]]
    | Literal["prediction"]
    | ScoreFn
    | LayerFilter
)


@dataclass(frozen=True)
class Objective:
    """Resolved targets: exactly one of ``selection``, ``score_fn`` and ``layer_filter``."""

    selection: torch.Tensor | None = None  # Tensor[N, K] weights over the logits
    score_fn: ScoreFn | None = None
    layer_filter: LayerFilter | None = None

    def scores(self, logits: torch.Tensor, filtered: torch.Tensor | None) -> torch.Tensor:
        """Per-sample scores. logits (Tensor[N, K]), filtered (the filter layer's
        output Tensor[N, C, ...] or None) -> Tensor[N]"""
        if self.selection is not None:
            return (logits * self.selection.to(logits.dtype)).sum(dim=1)
        if self.score_fn is not None:
            return _checked_scores(self.score_fn(logits), logits.shape[0])
        if self.layer_filter is None or filtered is None:
            raise AttributionError("The filter's layer was not called in the forward pass.")
        return _filter_means(filtered, self.layer_filter.filter)

    def repeated(self, times: int) -> Objective:
        """The same objective for a batch whose samples are each repeated ``times`` in a row."""
        if self.selection is not None:
            return Objective(selection=self.selection.repeat_interleave(times, dim=0))
        layer_filter = self.layer_filter
        if layer_filter is not None and isinstance(layer_filter.filter, torch.Tensor):
            indices = layer_filter.filter.repeat_interleave(times, dim=0)
            layer_filter = LayerFilter(layer_filter.layer, indices)
        return Objective(score_fn=self.score_fn, layer_filter=layer_filter)


def objective(targets: TargetSpec, logits: torch.Tensor) -> Objective:
    """Resolve ``targets`` against the logits (Tensor[N, K]) of the clean forward pass."""
    if isinstance(targets, LayerFilter):
        return Objective(layer_filter=targets)
    if callable(targets):
        return Objective(score_fn=targets)
    if isinstance(targets, str):
        if targets != "prediction":
            raise AttributionError(f"Expected targets 'prediction' or indices, got {targets!r}.")
        return Objective(selection=_one_hot(logits.argmax(dim=1), logits))
    return Objective(selection=_selection(targets, logits))


def _selection(targets: torch.Tensor | Sequence, logits: torch.Tensor) -> torch.Tensor:
    n, k = logits.shape
    if isinstance(targets, torch.Tensor) and targets.dim() == 2:
        if tuple(targets.shape) != (n, k):
            raise AttributionError(
                f"Expected multi-label targets of shape ({n}, {k}), got {tuple(targets.shape)}."
            )
        return targets.to(device=logits.device, dtype=logits.dtype)
    if not isinstance(targets, torch.Tensor) and any(isinstance(t, Sequence) for t in targets):
        return _label_sets(targets, logits)
    indices = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if indices.numel() != n:
        raise AttributionError(f"Expected {n} targets, one per sample, got {indices.numel()}.")
    return _one_hot(indices, logits)


def _one_hot(indices: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """indices (Tensor[M]) -> Tensor[M, K] with ones at the indices (a set when M is one row)."""
    k = logits.shape[1]
    indices = indices.to(logits.device)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise AttributionError(
            f"Expected targets in [0, {k}), got {indices.min().item()}..{indices.max().item()}."
        )
    return torch.nn.functional.one_hot(indices, k).to(logits.dtype)


def _label_sets(targets: Sequence, logits: torch.Tensor) -> torch.Tensor:
    """A list of index lists -> Tensor[N, K] with ones at each sample's indices."""
    if not all(isinstance(t, Sequence) for t in targets):
        raise AttributionError("Expected targets all indices or all index sets, got a mix.")
    if len(targets) != logits.shape[0]:
        raise AttributionError(
            f"Expected {logits.shape[0]} label sets, one per sample, got {len(targets)}."
        )
    rows = [_one_hot(torch.as_tensor(list(t), dtype=torch.long), logits) for t in targets]
    return torch.stack([row.sum(dim=0).clamp_max(1.0) for row in rows])


def _checked_scores(scores: object, n: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n,):
        shape = getattr(scores, "shape", type(scores).__name__)
        raise AttributionError(f"Expected the target callable to return Tensor[{n}], got {shape}.")
    return scores


def _filter_means(outputs: torch.Tensor, filters: int | torch.Tensor) -> torch.Tensor:
    """outputs (Tensor[N, C, ...]) -> Tensor[N]: each sample's filter, averaged over space."""
    n, channels = outputs.shape[:2]
    index = torch.as_tensor(filters, device=outputs.device).expand(n)
    if int(index.min()) < 0 or int(index.max()) >= channels:
        raise AttributionError(f"Expected filter indices in [0, {channels}), got {filters}.")
    picked = outputs.gather(
        1, index.view(n, 1, *([1] * (outputs.dim() - 2))).expand(n, 1, *outputs.shape[2:])
    )
    return picked.flatten(1).mean(dim=1)
