"""The fused attribution engine: one forward pass, one input-only backward per ReLU rule.

During the forward pass a ``TorchFunctionMode`` routes every rectifier to a function whose
backward rule is read at backward time (``rules.py``), and a forward hook keeps the target
layer's output. The recorded graph then serves up to three ``torch.autograd.grad`` calls:

- plain: the input gradient (saliency, gradient x input) and the layer gradient (Grad-CAM,
  Grad-CAM++, LayerCAM);
- guided: guided backprop, and with Grad-CAM, guided Grad-CAM;
- deconv: deconvnet.

CAM needs no backward: it reads the head's weights recorded in the same forward pass.
SmoothGrad and integrated gradients run their own batched passes on noisy or scaled copies.
Parameters never receive ``.grad``; each module's train/eval mode is restored, and hooks and
the mode are removed even when the model raises.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from auditor.attribution import cam as cams
from auditor.attribution.gradient import modified, reduced
from auditor.attribution.options import (
    GradientOptions,
    IntegratedGradientsOptions,
    SmoothGradOptions,
    parsed,
)
from auditor.attribution.rules import RULES, ForwardRecorder, HeadRecord, Rule, RuleSwitch
from auditor.attribution.sampled import integrated_gradients, smoothgrad
from auditor.attribution.targets import LayerFilter, Objective, TargetSpec, objective
from auditor.errors import AttributionError

METHODS = (
    "gradcam",
    "saliency",
    "gradient_x_input",
    "deconvnet",
    "guided_backprop",
    "cam",
    "gradcam_pp",
    "layercam",
    "guided_gradcam",
    "smoothgrad",
    "integrated_gradients",
)
LAYER_MAPS = {"gradcam": cams.gradcam, "gradcam_pp": cams.gradcam_pp, "layercam": cams.layercam}
CAM_METHODS = frozenset({*LAYER_MAPS, "guided_gradcam"})
"""Methods that need a target layer."""
EAGER_METHODS = CAM_METHODS | {"cam", "guided_backprop", "deconvnet"}
"""Methods that watch the forward pass in Python (layer hooks, the ReLU rule or the head), so
they cannot run on TorchScript, whose forward pass runs outside Python."""

_NEEDS: dict[str, tuple[tuple[Rule, str], ...]] = {
    "saliency": (("plain", "input"),),
    "gradient_x_input": (("plain", "input"),),
    "gradcam": (("plain", "layer"),),
    "gradcam_pp": (("plain", "layer"),),
    "layercam": (("plain", "layer"),),
    "guided_backprop": (("guided", "input"),),
    "guided_gradcam": (("guided", "input"), ("plain", "layer")),
    "deconvnet": (("deconv", "input"),),
}


@dataclass(frozen=True)
class Attribution:
    """Maps per method (Tensor[N, H, W]) and the logits (Tensor[N, K]) of the same pass."""

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor


@dataclass(frozen=True)
class _Forward:
    inputs: torch.Tensor  # Tensor[N, C, H, W], the leaf the graph starts from
    logits: torch.Tensor  # Tensor[N, K]
    objective: Objective
    total: torch.Tensor  # scalar: the sum of the per-sample target scores
    layer: torch.Tensor | None  # the target layer's output
    head: HeadRecord
    switch: RuleSwitch


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Mapping[str, Mapping[str, Any] | GradientOptions] | None = None,
) -> dict[str, torch.Tensor]:
    """Attribution maps of ``targets`` (see ``targets.py``) for a batch.

    inputs (Tensor[N, C, H, W]) -> {method: Tensor[N, H, W]} float32 on the inputs' device,
    non-negative with the default options (``reduce="channels"`` gives Tensor[N, C, H, W]).

    ``target_layer`` is needed by the methods in ``CAM_METHODS``; ``cam`` reads the model's
    GAP + linear head instead. ``options`` holds per-method settings, such as
    ``{"saliency": {"reduce": "signed"}, "smoothgrad": {"samples": 8, "sigma": 0.1}}``
    (see ``options.py``); the pipeline scores the non-negative defaults.

    A sample's maps do not depend on the rest of its batch (the model runs in eval mode, and
    SmoothGrad draws the same noise for every sample).
    """
    return compute(
        model, inputs, targets, methods=methods, target_layer=target_layer, options=options
    ).maps


def compute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Mapping[str, Mapping[str, Any] | GradientOptions] | None = None,
) -> Attribution:
    """Maps and logits from one forward pass and at most three input-only backwards."""
    return compute_many(
        model, inputs, {"": targets}, methods=methods, target_layer=target_layer, options=options
    )[""]


def attribute_many(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Mapping[str, TargetSpec],
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Mapping[str, Mapping[str, Any] | GradientOptions] | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Maps for several targets of the same images in one call, e.g. what supports the
    label and what supports the prediction: ``{"label": labels, "prediction": "prediction"}``.

    -> {target name: {method: Tensor[N, H, W]}}; the targets share one forward pass.
    """
    found = compute_many(
        model, inputs, targets, methods=methods, target_layer=target_layer, options=options
    )
    return {name: result.maps for name, result in found.items()}


def compute_many(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Mapping[str, TargetSpec],
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Mapping[str, Mapping[str, Any] | GradientOptions] | None = None,
) -> dict[str, Attribution]:
    """One forward pass shared by every target; each target then costs its own input-only
    backwards (one per rule), with the graph kept until the last of them."""
    methods = tuple(dict.fromkeys(methods))
    _check_methods(methods, target_layer, model)
    settings = parsed(methods, options)
    if not targets:
        raise AttributionError("Expected at least one target.")
    if inputs.shape[0] == 0:
        empty = {m: inputs.new_zeros((0, *inputs.shape[-2:])) for m in methods}
        return {name: Attribution(empty, inputs.new_zeros((0, 0))) for name in targets}
    layered = any(m in CAM_METHODS for m in methods)
    layers = {"target": target_layer if layered else None, "filter": _filter_layer(targets)}
    names = list(targets)
    out = {}
    with _eval_mode(model), _capture(layers) as captured, torch.enable_grad():
        forward = _forward(model, inputs, targets[names[0]], methods, captured)
        for k, name in enumerate(names):
            if k:
                forward = _retargeted(forward, targets[name], captured)
            grads = _backwards(forward, methods, keep_graph=k < len(names) - 1)
            maps = _maps(forward, grads, methods, settings)
            maps.update(_sampled_maps(model, inputs, forward.objective, settings, captured))
            ordered = {m: maps[m].detach().float() for m in methods}
            out[name] = Attribution(ordered, forward.logits.detach())
    return out


def _filter_layer(targets: Mapping[str, TargetSpec]) -> nn.Module | None:
    layers = {id(t.layer): t.layer for t in targets.values() if isinstance(t, LayerFilter)}
    if len(layers) > 1:
        raise AttributionError("Filter targets of one call must share their layer.")
    return next(iter(layers.values()), None)


def _retargeted(
    forward: _Forward, targets: TargetSpec, captured: dict[str, torch.Tensor]
) -> _Forward:
    """The same forward pass scored for other targets."""
    found = objective(targets, forward.logits.detach())
    total = found.scores(forward.logits, captured.get("filter")).sum()
    return dataclasses.replace(forward, objective=found, total=total)


def _sampled_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    found: Objective,
    settings: dict[str, GradientOptions],
    captured: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """SmoothGrad and integrated gradients, each from its own batched passes."""
    maps = {}
    smooth, path = settings.get("smoothgrad"), settings.get("integrated_gradients")
    if isinstance(smooth, SmoothGradOptions):
        maps["smoothgrad"] = _finished(smoothgrad(model, inputs, found, smooth, captured), smooth)
    if isinstance(path, IntegratedGradientsOptions):
        grads = integrated_gradients(model, inputs, found, path, captured)
        maps["integrated_gradients"] = _finished(grads, path)
    return maps


def _check_methods(
    methods: tuple[str, ...], target_layer: nn.Module | None, model: nn.Module
) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise AttributionError(f"Expected methods from {list(METHODS)}, got {list(methods)}.")
    eager = [m for m in methods if m in EAGER_METHODS]
    if eager and isinstance(model, torch.jit.ScriptModule):
        raise AttributionError(
            f"{', '.join(eager)} cannot run on a TorchScript model: its forward pass runs "
            "outside Python, where layers cannot be hooked nor ReLUs routed; audit the eager "
            "model (module:factory or a state_dict) for these methods."
        )
    layered = [m for m in methods if m in CAM_METHODS]
    if layered and target_layer is None:
        raise AttributionError(
            f"{', '.join(layered)} need(s) a target layer (see models.resolve_target_layer)."
        )


def _forward(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    methods: tuple[str, ...],
    captured: dict[str, torch.Tensor],
) -> _Forward:
    switch = RuleSwitch()
    recorder = ForwardRecorder(switch)
    needs_input = any(part == "input" for m in methods for _, part in _NEEDS.get(m, ()))
    leaf = inputs.detach().clone().requires_grad_(needs_input)
    with recorder, torch.set_grad_enabled(any(m in _NEEDS for m in methods)):
        logits = _checked_logits(model(leaf))
    found = objective(targets, logits.detach())
    total = found.scores(logits, captured.get("filter")).sum()
    layer = captured.get("target")
    return _Forward(leaf, logits, found, total, layer, recorder.head, switch)


def _backwards(
    forward: _Forward, methods: tuple[str, ...], *, keep_graph: bool = False
) -> dict[tuple[Rule, str], torch.Tensor]:
    """One ``autograd.grad`` call per rule needed: {(rule, "input" | "layer"): gradient}."""
    wanted = {need for m in methods for need in _NEEDS.get(m, ())}
    rules = [r for r in RULES if any(w[0] == r for w in wanted)]
    if any(r != "plain" for r in rules) and forward.switch.rectifiers == 0:
        asked = [m for m in methods if m in ("guided_backprop", "guided_gradcam", "deconvnet")]
        raise AttributionError(
            f"{', '.join(asked)} need(s) ReLU units, and the model's forward pass called none "
            "(nn.ReLU, nn.ReLU6, F.relu, torch.relu, Tensor.relu or relu_)."
        )
    grads: dict[tuple[Rule, str], torch.Tensor] = {}
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


def _layer_output(forward: _Forward) -> torch.Tensor:
    if forward.layer is None:
        raise AttributionError("The target layer was not called in the forward pass.")
    if not forward.layer.requires_grad:
        raise AttributionError("The target layer's output does not depend on the input.")
    return forward.layer


def _maps(
    forward: _Forward,
    grads: dict[tuple[Rule, str], torch.Tensor],
    methods: tuple[str, ...],
    settings: dict[str, GradientOptions],
) -> dict[str, torch.Tensor]:
    """The maps of the fused pass at input size, from the gradients of each rule and CAM."""
    size = (int(forward.inputs.shape[-2]), int(forward.inputs.shape[-1]))
    layer = {m: _layer_map(m, forward, grads, size) for m in methods if m in LAYER_MAPS}
    if "guided_gradcam" in methods:
        layer.setdefault("gradcam", _layer_map("gradcam", forward, grads, size))
    channels = {
        "saliency": lambda: grads[("plain", "input")],
        "gradient_x_input": lambda: grads[("plain", "input")] * forward.inputs.detach(),
        "guided_backprop": lambda: grads[("guided", "input")],
        "deconvnet": lambda: grads[("deconv", "input")],
        "guided_gradcam": lambda: grads[("guided", "input")] * layer["gradcam"][:, None],
    }
    maps = {m: layer[m] for m in methods if m in LAYER_MAPS}
    maps.update({m: _finished(channels[m](), settings[m]) for m in methods if m in channels})
    if "cam" in methods:
        maps["cam"] = cams.upsample(_head_cam(forward), size)
    return maps


def _layer_map(
    method: str,
    forward: _Forward,
    grads: dict[tuple[Rule, str], torch.Tensor],
    size: tuple[int, int],
) -> torch.Tensor:
    activations, gradients = _spatial(_layer_output(forward).detach(), grads[("plain", "layer")])
    return cams.upsample(LAYER_MAPS[method](activations, gradients), size)


def _spatial(
    activations: torch.Tensor, gradients: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's output as Tensor[N, C, h, w]; transformer tokens become their grid."""
    if activations.dim() == 4:
        return activations, gradients
    if activations.dim() == 3:
        return cams.token_grid(activations), cams.token_grid(gradients)
    raise AttributionError(
        f"Expected the target layer to output Tensor[N, C, h, w] or tokens Tensor[N, 1+h*w, C], "
        f"got shape {tuple(activations.shape)}."
    )


def _head_cam(forward: _Forward) -> torch.Tensor:
    """CAM from the recorded head: Tensor[N, h, w]. Raises unless the logits come from a linear
    layer applied to the global average of a feature map."""
    head, selection = forward.head, forward.objective.selection
    if selection is None:
        raise AttributionError("CAM needs class targets (indices, sets or 'prediction').")
    if head.pooled is None or head.weight is None or not _is_gap_linear(head, forward.logits):
        raise AttributionError(
            "CAM needs a head of global average pooling followed by one linear layer "
            "(the logits must equal linear(mean of a feature map)); use gradcam instead."
        )
    weights = selection.to(head.weight.dtype) @ head.weight.detach()
    return cams.class_activation_map(head.pooled.detach(), weights)


def _is_gap_linear(head: HeadRecord, logits: torch.Tensor) -> bool:
    pooled, features, outputs = head.pooled, head.linear_inputs, head.linear_outputs
    if pooled is None or features is None or outputs is None:
        return False
    means = pooled.detach().mean(dim=(2, 3))
    if features.shape != means.shape or outputs.shape != logits.shape:
        return False
    return bool(
        torch.allclose(features.detach(), means, rtol=1e-4, atol=1e-5)
        and torch.allclose(outputs.detach(), logits.detach(), rtol=1e-4, atol=1e-5)
    )


def _finished(channel_maps: torch.Tensor, settings: GradientOptions) -> torch.Tensor:
    """Channel map (Tensor[N, C, H, W]) -> the method's map, modifier then reduction."""
    return reduced(modified(channel_maps.detach(), settings.modifier), settings.reduce)


def _checked_logits(logits: object) -> torch.Tensor:
    if isinstance(logits, torch.Tensor) and logits.dim() == 1:
        return logits[:, None]
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = getattr(logits, "shape", type(logits).__name__)
        raise AttributionError(f"Expected the model to return logits Tensor[N, K], got {shape}.")
    return logits


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the call; every submodule gets its own mode back afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _capture(layers: dict[str, nn.Module | None]) -> Iterator[dict[str, torch.Tensor]]:
    """Keep each layer's latest output under its key; the hooks go when the block ends.

    The model goes on with a copy, so that a later in-place op (``ReLU(inplace=True)``) cannot
    change the kept output, and gradients reach the output as it left the layer.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def keeper(key: str):
        def hook(_module: nn.Module, _inputs: object, output: Any) -> Any:
            if not isinstance(output, torch.Tensor):
                raise AttributionError(
                    f"Expected the {key} layer to return a tensor, got {type(output).__name__}."
                )
            captured[key] = output
            return output.clone()

        return hook

    try:
        for key, layer in layers.items():
            if layer is not None:
                handles.append(layer.register_forward_hook(keeper(key)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
