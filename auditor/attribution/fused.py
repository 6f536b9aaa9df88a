"""One fused attribution pass: the forward pass with every rectifier routed and the target
layer and head recorded, then the input-only backwards, one per ReLU rule, and the maps each
method's finisher makes of them (see :mod:`auditor.attribution.engine`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from auditor.attribution import cam as cams
from auditor.attribution.options import GradientOptions
from auditor.attribution.precision import autocast
from auditor.attribution.registry import FusedPass, MethodRegistry, MethodSpec, Need
from auditor.attribution.rules import RULES, ForwardRecorder, HeadRecord, RuleSwitch
from auditor.attribution.targets import Objective, TargetSpec, objective
from auditor.errors import AttributionError
from auditor.models import TargetLayer, logits_of


def partial_methods(specs: Sequence[MethodSpec[Any]], switch: RuleSwitch) -> dict[str, str]:
    """The guided and deconv methods, when the forward pass also ran nonlinearities the rule
    does not cover: those passed the plain gradient, so the map is a hybrid."""
    if not switch.others:
        return {}
    others = sum(switch.others.values())
    kinds = ", ".join(f"{name} x{n}" for name, n in switch.others.most_common())
    reason = (
        f"partial: its backward rule applied to {switch.rectifiers} of "
        f"{switch.rectifiers + others} nonlinearities; the other {others} ({kinds}) passed "
        "the plain gradient"
    )
    return {spec.name: reason for spec in specs if any(r != "plain" for r, _ in spec.needs)}


@dataclass(frozen=True)
class Forward:
    inputs: torch.Tensor  # Tensor[N, C, H, W], the leaf the graph starts from
    logits: torch.Tensor  # Tensor[N, K]
    objective: Objective
    total: torch.Tensor  # scalar: the sum of the per-sample target scores
    layer: torch.Tensor | None  # the target layer's output
    head: HeadRecord
    switch: RuleSwitch


def retargeted(forward: Forward, targets: TargetSpec, captured: dict[str, torch.Tensor]) -> Forward:
    """The same forward pass scored for other targets."""
    found = objective(targets, forward.logits.detach())
    total = found.scores(forward.logits, captured.get("filter")).sum()
    return dataclasses.replace(forward, objective=found, total=total)


def forward_pass(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    specs: tuple[MethodSpec[Any], ...],
    captured: dict[str, torch.Tensor],
    precision: str = "fp32",
) -> Forward:
    switch = RuleSwitch()
    recorder = ForwardRecorder(switch)
    needs_input = any(part == "input" for spec in specs for _, part in spec.needs)
    leaf = inputs.detach().clone().requires_grad_(needs_input)
    with recorder, torch.set_grad_enabled(any(spec.needs for spec in specs)):
        with autocast(inputs.device, precision):
            logits = _checked_logits(logits_of(model(leaf)))
        logits = _widened(logits)  # the objective and its gradients from here in float32
    found = objective(targets, logits.detach())
    total = found.scores(logits, captured.get("filter")).sum()
    layer = captured.get("target")
    return Forward(leaf, logits, found, total, layer, recorder.head, switch)


def _widened(tensor: torch.Tensor) -> torch.Tensor:
    """A half-precision tensor (from an autocast forward) in float32; others as they are
    (a float64 model keeps float64 up to the final maps)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def backwards(
    forward: Forward, specs: tuple[MethodSpec[Any], ...], *, keep_graph: bool = False
) -> dict[Need, torch.Tensor]:
    """One ``autograd.grad`` call per rule needed: {(rule, "input" | "layer"): gradient}."""
    wanted = {need for spec in specs for need in spec.needs}
    rules = [r for r in RULES if any(w[0] == r for w in wanted)]
    if any(r != "plain" for r in rules) and forward.switch.rectifiers == 0:
        asked = [spec.name for spec in specs if any(r != "plain" for r, _ in spec.needs)]
        raise AttributionError(
            f"{', '.join(asked)} need(s) ReLU units, and the model's forward pass called none "
            "(nn.ReLU, nn.ReLU6, F.relu, torch.relu, Tensor.relu or relu_)."
        )
    grads: dict[Need, torch.Tensor] = {}
    for i, rule in enumerate(rules):
        parts = sorted(part for r, part in wanted if r == rule)
        wrt = [forward.inputs if part == "input" else _layer_output(forward) for part in parts]
        forward.switch.rule = rule
        found = torch.autograd.grad(
            forward.total, wrt, retain_graph=keep_graph or i < len(rules) - 1, allow_unused=True
        )
        for part, tensor, grad in zip(parts, wrt, found):
            grads[(rule, part)] = torch.zeros_like(tensor) if grad is None else grad
    return grads


def _layer_output(forward: Forward) -> torch.Tensor:
    if forward.layer is None:
        raise AttributionError("The target layer was not called in the forward pass.")
    if not forward.layer.requires_grad:
        raise AttributionError("The target layer's output does not depend on the input.")
    return forward.layer


def fused_pass(
    model: nn.Module,
    inputs: torch.Tensor,
    forward: Forward,
    grads: dict[Need, torch.Tensor],
    captured: dict[str, torch.Tensor],
) -> FusedPass:
    """What the finishers read; the target layer's output and gradients as Tensor[N, C, h, w]."""
    layered = {need: g for need, g in grads.items() if need[1] == "layer"}
    activations, gradients = None, grads
    if layered:
        activations = _widened(_spatial(_layer_output(forward).detach()))
        gradients = grads | {need: _widened(_spatial(g)) for need, g in layered.items()}
    return FusedPass(
        model=model,
        inputs=inputs.detach(),
        logits=forward.logits.detach(),
        objective=forward.objective,
        gradients=gradients,
        activations=activations,
        head=forward.head,
        captured=captured,
    )


def maps_of(
    fused: FusedPass,
    specs: tuple[MethodSpec[Any], ...],
    settings: dict[str, GradientOptions],
    registry: MethodRegistry,
) -> dict[str, torch.Tensor]:
    """Each asked method's map from its finisher, in registry order whatever the order asked
    (so SmoothGrad and integrated gradients, registered last, run after the fused maps)."""
    asked = {spec.name for spec in specs}
    return {
        spec.name: spec.finish(fused, settings.get(spec.name))
        for spec in registry
        if spec.name in asked
    }


def _spatial(tensor: torch.Tensor) -> torch.Tensor:
    """A layer's output or gradient as Tensor[N, C, h, w]; transformer tokens become their grid."""
    if tensor.dim() == 4:
        return tensor
    if tensor.dim() == 3:
        return cams.token_grid(tensor)
    raise AttributionError(
        f"Expected the target layer to output Tensor[N, C, h, w] or tokens Tensor[N, 1+h*w, C], "
        f"got shape {tuple(tensor.shape)}."
    )


def _checked_logits(logits: object) -> torch.Tensor:
    if isinstance(logits, torch.Tensor) and logits.dim() == 1:
        return logits[:, None]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise AttributionError(f"Expected the model to return logits Tensor[N, K], got {shape}.")
    return logits


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call; every submodule gets its own mode back afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def capture(
    layers: dict[str, nn.Module | TargetLayer | None],
) -> Iterator[dict[str, torch.Tensor]]:
    """Keep each layer's latest output under its key; the hooks go when the block ends.

    The model goes on with a copy, so that a later in-place op (``ReLU(inplace=True)``) cannot
    change the kept output, and gradients reach the output as it left the layer. A
    channels-last layer (``layout="nhwc"``) is kept as Tensor[N, C, H, W], and the model goes
    on from that.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def keeper(key: str, channels_last: bool):
        def hook(_module: nn.Module, _inputs: object, output: Any) -> Any:
            if not isinstance(output, torch.Tensor):
                raise AttributionError(
                    f"Expected the {key} layer to return a tensor, got {type(output).__name__}."
                )
            if channels_last:
                captured[key] = output.permute(0, 3, 1, 2)
                return captured[key].permute(0, 2, 3, 1).clone()
            captured[key] = output
            return output.clone()

        return hook

    try:
        for key, layer in layers.items():
            if isinstance(layer, TargetLayer):
                hook = keeper(key, layer.layout == "nhwc")
                handles.append(layer.module.register_forward_hook(hook))
            elif layer is not None:
                handles.append(layer.register_forward_hook(keeper(key, False)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
