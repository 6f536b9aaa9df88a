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
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from auditor.attribution.fused import (
    backwards,
    capture,
    eval_mode,
    forward_pass,
    fused_pass,
    maps_of,
    partial_methods,
    retargeted,
)
from auditor.attribution.methods import CAM_METHODS as CAM_METHODS
from auditor.attribution.methods import EAGER_METHODS as EAGER_METHODS
from auditor.attribution.methods import METHODS as METHODS
from auditor.attribution.methods import REGISTRY
from auditor.attribution.options import GradientOptions, parsed
from auditor.attribution.registry import MethodRegistry, MethodSpec
from auditor.attribution.targets import LayerFilter, TargetSpec
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


class Maps(dict[str, torch.Tensor]):
    """``{method: Tensor[N, H, W]}`` as :func:`attribute` returns it, with the layer the CAM
    methods read in ``target_layer`` (None when none of them ran; ``automatic`` says
    whether it was chosen by :func:`auditor.models.resolve_target_layer`), and in
    ``partial`` the methods whose rule reached only some nonlinearities, with why.
    ``layer_reused``: the automatic layer was resolved by an earlier call on the same model
    and input size, and taken from there (it is resolved once per model and size)."""

    target_layer: TargetLayer | None = None
    partial: dict[str, str] = {}  # noqa: RUF012 - replaced per instance, never mutated
    layer_reused: bool = False


LayerKey = tuple[tuple[int, ...], str]
#: The automatic layer per model and (input size, device): resolving it costs two forward
#: passes and a backward, more than the attribution of a batch. Weak keys: a model that is
#: gone takes its entry with it.
_RESOLVED: weakref.WeakKeyDictionary[nn.Module, dict[LayerKey, TargetLayer]] = (
    weakref.WeakKeyDictionary()
)


def _auto_layer(
    model: nn.Module,
    inputs: torch.Tensor,
    methods: Sequence[str],
    target_layer: nn.Module | TargetLayer | None,
    registry: MethodRegistry,
) -> tuple[TargetLayer | None, bool]:
    """(The given layer, or, when a requested method needs one and none was given, the one
    the CLI would choose (the 7x7-cell rule, a transformer's token grid); whether that was
    resolved by an earlier call)."""
    needs = [m for m in methods if m in registry and registry.get(m).layer]
    if not needs:
        return None, False
    if isinstance(target_layer, TargetLayer):
        return target_layer, False
    if target_layer is not None:
        names = {id(module): name for name, module in model.named_modules()}
        name = names.get(id(target_layer), type(target_layer).__name__)
        return TargetLayer(name, target_layer, (0, 0), automatic=False), False
    known = _RESOLVED.setdefault(model, {})
    key = (tuple(inputs.shape[1:]), str(inputs.device))
    layer = known.get(key)
    if layer is not None and any(module is layer.module for module in model.modules()):
        return layer, True
    try:
        size = inputs.shape[-2]
        known[key] = resolve_target_layer(model, None, image_size=size, device=inputs.device)
    except ModelError as exc:
        raise AttributionError(f"{', '.join(needs)}: {exc}") from None
    return known[key], False


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec,
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | TargetLayer | None = None,
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

    Without ``target_layer``, a CAM method reads the layer the CLI would choose, resolved on
    the first call for this model and input size and reused by later ones; the returned
    :class:`Maps` names it in ``.target_layer`` (and ``.layer_reused`` says it was reused).
    ``target_layer`` may also be a :class:`~auditor.models.TargetLayer`, for a
    channels-last layer (``layout="nhwc"``).

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
    target_layer: nn.Module | TargetLayer | None = None,
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
    target_layer: nn.Module | TargetLayer | None = None,
    options: Options | None = None,
    registry: MethodRegistry = REGISTRY,
) -> dict[str, Maps]:
    """Maps for several targets of the same images in one call, e.g. what supports the
    label and what supports the prediction: ``{"label": labels, "prediction": "prediction"}``.

    -> {target name: {method: Tensor[N, H, W]}}; the targets share one forward pass. Without
    ``target_layer``, as :func:`attribute`.
    """
    layer, reused = _auto_layer(model, inputs, methods, target_layer, registry)
    found = compute_many(
        model,
        inputs,
        targets,
        methods=methods,
        target_layer=layer,
        options=options,
        registry=registry,
    )
    out = {}
    for name, result in found.items():
        out[name] = Maps(result.maps)
        out[name].target_layer, out[name].partial = layer, result.partial
        out[name].layer_reused = reused
    return out


def compute_many(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Mapping[str, TargetSpec],
    *,
    methods: Sequence[str] = ("gradcam", "saliency"),
    target_layer: nn.Module | TargetLayer | None = None,
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
    with eval_mode(model), capture(layers) as captured, torch.enable_grad():
        forward = forward_pass(model, inputs, targets[names[0]], specs, captured, precision)
        for k, name in enumerate(names):
            if k:
                forward = retargeted(forward, targets[name], captured)
            grads = backwards(forward, specs, keep_graph=k < len(names) - 1)
            made = fused_pass(model, inputs, forward, grads, captured)
            maps = maps_of(made, specs, settings, registry)
            ordered = {m: maps[m].detach().float() for m in methods}
            partial = partial_methods(specs, forward.switch)
            out[name] = Attribution(ordered, forward.logits.detach(), partial)
    return out


def _filter_layer(targets: Mapping[str, TargetSpec]) -> nn.Module | None:
    layers = {id(t.layer): t.layer for t in targets.values() if isinstance(t, LayerFilter)}
    if len(layers) > 1:
        raise AttributionError("Filter targets of one call must share their layer.")
    return next(iter(layers.values()), None)


def _checked_specs(
    methods: tuple[str, ...],
    target_layer: nn.Module | TargetLayer | None,
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
