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
What each method needs, and the finisher that makes its map from the pass, is its entry in
the method registry (``methods.py``); the engine reads nothing else about a method.
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
from auditor.attribution.methods import CAM_METHODS as CAM_METHODS
from auditor.attribution.methods import EAGER_METHODS as EAGER_METHODS
from auditor.attribution.methods import METHODS as METHODS
from auditor.attribution.methods import REGISTRY
from auditor.attribution.options import GradientOptions, parsed
from auditor.attribution.precision import autocast
from auditor.attribution.registry import FusedPass, MethodRegistry, MethodSpec, Need
from auditor.attribution.rules import RULES, ForwardRecorder, HeadRecord, RuleSwitch
from auditor.attribution.targets import LayerFilter, Objective, TargetSpec, objective
from auditor.errors import AttributionError, ModelError
from auditor.models import TargetLayer, resolve_target_layer

Options = Mapping[str, Mapping[str, Any] | GradientOptions]


@dataclass(frozen=True)
class Attribution:
    """Maps per method (Tensor[N, H, W]) and the logits (Tensor[N, K]) of the same pass;
    ``partial``: the methods whose backward rule reached only some of the model's
    nonlinearities, with why (see :func:`partial_methods`)."""

    maps: dict[str, torch.Tensor]
    logits: torch.Tensor
    partial: dict[str, str] = dataclasses.field(default_factory=dict)


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
class _Forward:
    inputs: torch.Tensor  # Tensor[N, C, H, W], the leaf the graph starts from
    logits: torch.Tensor  # Tensor[N, K]
    objective: Objective
    total: torch.Tensor  # scalar: the sum of the per-sample target scores
    layer: torch.Tensor | None  # the target layer's output
    head: HeadRecord
    switch: RuleSwitch


class Maps(dict[str, torch.Tensor]):
    """``{method: Tensor[N, H, W]}`` as :func:`attribute` returns it, with the layer the CAM
    methods read in ``target_layer`` (None when none of them ran; ``automatic`` says
    whether it was chosen by :func:`auditor.models.resolve_target_layer`), and in
    ``partial`` the methods whose rule reached only some nonlinearities, with why."""

    target_layer: TargetLayer | None = None
    partial: dict[str, str] = {}  # noqa: RUF012 - replaced per instance, never mutated


def _auto_layer(
    model: nn.Module,
    inputs: torch.Tensor,
    methods: Sequence[str],
    target_layer: nn.Module | None,
    registry: MethodRegistry,
) -> TargetLayer | None:
    """The given layer, or, when a requested method needs one and none was given, the one
    the CLI would choose (the 7x7-cell rule, a transformer's token grid)."""
    needs = [m for m in methods if m in registry and registry.get(m).layer]
    if not needs:
        return None
    if target_layer is not None:
        names = {id(module): name for name, module in model.named_modules()}
        name = names.get(id(target_layer), type(target_layer).__name__)
        return TargetLayer(name, target_layer, (0, 0), automatic=False)
    try:
        return resolve_target_layer(model, None, image_size=inputs.shape[-2], device=inputs.device)
    except ModelError as exc:
        raise AttributionError(f"{', '.join(needs)}: {exc}") from None


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Options | None = None,
    registry: MethodRegistry = REGISTRY,
) -> Maps:
    """Attribution maps of ``targets`` (see ``targets.py``) for a batch.

    inputs (Tensor[N, C, H, W]) -> {method: Tensor[N, H, W]} float32 on the inputs' device,
    non-negative with the default options (``reduce="channels"`` gives Tensor[N, C, H, W]).

    ``target_layer`` is needed by the methods in ``CAM_METHODS``; ``cam`` reads the model's
    GAP + linear head instead. ``options`` holds per-method settings, such as
    ``{"saliency": {"reduce": "signed"}, "smoothgrad": {"samples": 8, "sigma": 0.1}}``
    (see ``options.py``); the pipeline scores the non-negative defaults. ``registry`` holds the
    methods that can be asked for (``methods.REGISTRY``, or one extended with more).

    Without ``target_layer``, a CAM method reads the layer the CLI would choose; the
    returned :class:`Maps` names it in ``.target_layer``.

    A sample's maps do not depend on the rest of its batch (the model runs in eval mode, and
    SmoothGrad draws the same noise for every sample).
    """
    return attribute_many(
        model,
        inputs,
        {"": targets},
        methods=methods,
        target_layer=target_layer,
        options=options,
        registry=registry,
    )[""]


def compute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Options | None = None,
    registry: MethodRegistry = REGISTRY,
    precision: str = "fp32",
) -> Attribution:
    """Maps and logits from one forward pass and at most three input-only backwards."""
    return compute_many(
        model,
        inputs,
        {"": targets},
        methods=methods,
        target_layer=target_layer,
        options=options,
        registry=registry,
        precision=precision,
    )[""]


def attribute_many(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Mapping[str, TargetSpec],
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Options | None = None,
    registry: MethodRegistry = REGISTRY,
) -> dict[str, Maps]:
    """Maps for several targets of the same images in one call, e.g. what supports the
    label and what supports the prediction: ``{"label": labels, "prediction": "prediction"}``.

    -> {target name: {method: Tensor[N, H, W]}}; the targets share one forward pass. Without
    ``target_layer``, as :func:`attribute`.
    """
    layer = _auto_layer(model, inputs, methods, target_layer, registry)
    found = compute_many(
        model,
        inputs,
        targets,
        methods=methods,
        target_layer=None if layer is None else layer.module,
        options=options,
        registry=registry,
    )
    out = {}
    for name, result in found.items():
        out[name] = Maps(result.maps)
        out[name].target_layer, out[name].partial = layer, result.partial
    return out


def compute_many(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Mapping[str, TargetSpec],
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | None = None,
    options: Options | None = None,
    registry: MethodRegistry = REGISTRY,
    precision: str = "fp32",
) -> dict[str, Attribution]:
    """One forward pass shared by every target; each target then costs its own input-only
    backwards (one per rule), with the graph kept until the last of them. ``precision``:
    autocast of the forward pass (:mod:`auditor.attribution.precision`); maps in float32."""
    methods = tuple(dict.fromkeys(methods))
    specs = _checked_specs(methods, target_layer, model, registry)
    kinds = {spec.name: spec.options for spec in specs if spec.options is not None}
    settings = parsed(methods, options, kinds)
    if not targets:
        raise AttributionError("Expected at least one target.")
    if inputs.shape[0] == 0:
        empty = {m: inputs.new_zeros((0, *inputs.shape[-2:])) for m in methods}
        return {name: Attribution(empty, inputs.new_zeros((0, 0))) for name in targets}
    layered = any(spec.layer for spec in specs)
    layers = {"target": target_layer if layered else None, "filter": _filter_layer(targets)}
    names = list(targets)
    out = {}
    with _eval_mode(model), _capture(layers) as captured, torch.enable_grad():
        forward = _forward(model, inputs, targets[names[0]], specs, captured, precision)
        for k, name in enumerate(names):
            if k:
                forward = _retargeted(forward, targets[name], captured)
            grads = _backwards(forward, specs, keep_graph=k < len(names) - 1)
            fused = _fused(model, inputs, forward, grads, captured)
            maps = _maps(fused, specs, settings, registry)
            ordered = {m: maps[m].detach().float() for m in methods}
            partial = partial_methods(specs, forward.switch)
            out[name] = Attribution(ordered, forward.logits.detach(), partial)
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


def _checked_specs(
    methods: tuple[str, ...],
    target_layer: nn.Module | None,
    model: nn.Module,
    registry: MethodRegistry,
) -> tuple[MethodSpec[Any], ...]:
    """The specs of ``methods``, in their order, once they are known and can run here."""
    unknown = [m for m in methods if m not in registry]
    if unknown or not methods:
        raise AttributionError(
            f"Expected methods from {list(registry.names)}, got {list(methods)}."
        )
    specs = tuple(registry.get(m) for m in methods)
    eager = [spec.name for spec in specs if spec.eager]
    if eager and isinstance(model, torch.jit.ScriptModule):
        raise AttributionError(
            f"{', '.join(eager)} cannot run on a TorchScript model: its forward pass runs "
            "outside Python, where layers cannot be hooked nor ReLUs routed; audit the eager "
            "model (module:factory or a state_dict) for these methods."
        )
    layered = [spec.name for spec in specs if spec.layer]
    if layered and target_layer is None:
        raise AttributionError(
            f"{', '.join(layered)} need(s) a target layer (see models.resolve_target_layer)."
        )
    return specs


def _forward(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    specs: tuple[MethodSpec[Any], ...],
    captured: dict[str, torch.Tensor],
    precision: str = "fp32",
) -> _Forward:
    switch = RuleSwitch()
    recorder = ForwardRecorder(switch)
    needs_input = any(part == "input" for spec in specs for _, part in spec.needs)
    leaf = inputs.detach().clone().requires_grad_(needs_input)
    with recorder, torch.set_grad_enabled(any(spec.needs for spec in specs)):
        with autocast(inputs.device, precision):
            logits = _checked_logits(model(leaf))
        logits = _widened(logits)  # the objective and its gradients from here in float32
    found = objective(targets, logits.detach())
    total = found.scores(logits, captured.get("filter")).sum()
    layer = captured.get("target")
    return _Forward(leaf, logits, found, total, layer, recorder.head, switch)


def _widened(tensor: torch.Tensor) -> torch.Tensor:
    """A half-precision tensor (from an autocast forward) in float32; others as they are
    (a float64 model keeps float64 up to the final maps)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _backwards(
    forward: _Forward, specs: tuple[MethodSpec[Any], ...], *, keep_graph: bool = False
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


def _layer_output(forward: _Forward) -> torch.Tensor:
    if forward.layer is None:
        raise AttributionError("The target layer was not called in the forward pass.")
    if not forward.layer.requires_grad:
        raise AttributionError("The target layer's output does not depend on the input.")
    return forward.layer


def _fused(
    model: nn.Module,
    inputs: torch.Tensor,
    forward: _Forward,
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


def _maps(
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
