"""The fused attribution engine: one forward pass, one input-only backward.

The target layer's output is captured during the forward pass, so a single
``torch.autograd.grad`` call returns both the input gradient (saliency) and the layer
gradient (Grad-CAM). Parameters never receive ``.grad``, the model's train/eval mode is
restored, and the hook is removed even when the model raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from auditor.attribution.cam import gradcam, upsample
from auditor.attribution.gradient import saliency
from auditor.errors import AttributionError

METHODS = ("gradcam", "saliency")
CAM_METHODS = frozenset({"gradcam"})


@dataclass(frozen=True)
class Attribution:
    """Maps per method (Tensor[N, H, W]) and the logits (Tensor[N, K]) of the same pass."""

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Attribution maps of ``targets`` for a batch.

    inputs (Tensor[N, C, H, W]), targets (Tensor[N] of class indices)
    -> {method: Tensor[N, H, W]} float32, non-negative, on the inputs' device.

    A sample's maps do not depend on the rest of its batch (the model runs in eval mode).
    """
    return compute(model, inputs, targets, methods=methods, target_layer=target_layer).maps


def compute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
) -> Attribution:
    """Maps and logits from one forward pass and one input-only backward."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise AttributionError(f"Unknown method(s) {unknown}; expected from {list(METHODS)}.")
    if any(m in CAM_METHODS for m in methods) and target_layer is None:
        raise AttributionError("Grad-CAM needs a target layer (see models.resolve_target_layer).")
    targets = torch.as_tensor(targets, device=inputs.device, dtype=torch.long)
    if inputs.shape[0] == 0:
        empty = {m: inputs.new_zeros((0, *inputs.shape[-2:])) for m in methods}
        return Attribution(empty, inputs.new_zeros((0, 0)))
    with _eval_mode(model), _capture(target_layer) as captured, torch.enable_grad():
        inputs = inputs.detach().clone().requires_grad_(True)
        logits = model(inputs)
        _check_logits(logits, targets)
        if target_layer is not None and not captured:
            raise AttributionError("The target layer was not called in the forward pass.")
        scores = logits.gather(1, targets[:, None]).sum()
        wrt = [inputs, *captured]
        grads = torch.autograd.grad(scores, wrt)
    maps = _maps(methods, inputs.detach(), grads, captured, size=inputs.shape[-2:])
    return Attribution(maps, logits.detach())


def _maps(
    methods: Sequence[str],
    inputs: torch.Tensor,
    grads: Sequence[torch.Tensor],
    captured: Sequence[torch.Tensor],
    *,
    size: torch.Size,
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for method in methods:
        if method == "saliency":
            out[method] = saliency(grads[0])
        elif method == "gradcam":
            cam = gradcam(captured[0].detach(), grads[1])
            out[method] = upsample(cam, (int(size[0]), int(size[1])))
    return {k: v.float().detach() for k, v in out.items()}


def _check_logits(logits: object, targets: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise AttributionError(f"Expected the model to return logits Tensor[N, K], got {shape}.")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise AttributionError(
            f"Expected targets in [0, {logits.shape[1]}), "
            f"got {targets.min().item()}..{targets.max().item()}."
        )


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _capture(layer: nn.Module | None) -> Iterator[list[torch.Tensor]]:
    """Collect ``layer``'s output of the forward pass (its last call, if reused)."""
    captured: list[torch.Tensor] = []
    if layer is None:
        yield captured
        return

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        captured[:] = [output]

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
