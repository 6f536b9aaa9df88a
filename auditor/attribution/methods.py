"""The built-in attribution methods: one registry entry each, and their finishers.

``REGISTRY`` (at the end) lists every method once, in the order of ``METHODS``. Input-gradient
methods are one rule's input gradient made a channel map (:func:`input_method`); the CAM
family weighs the target layer (:func:`layer_method`); CAM reads the model's head; SmoothGrad
and integrated gradients run their own batched passes (``sampled.py``). The engine finishes
the maps in registry order, so these two, registered last, run after the fused pass's maps.
``METHODS``, ``CAM_METHODS`` and ``EAGER_METHODS`` are read off the registry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from auditor.attribution import cam as cams
from auditor.attribution.gradient import ChannelMap, modified, reduced
from auditor.attribution.options import (
    GradientOptions,
    IntegratedGradientsOptions,
    SmoothGradOptions,
)
from auditor.attribution.registry import FusedPass, MethodRegistry, MethodSpec, Need
from auditor.attribution.rules import HeadRecord, Rule
from auditor.attribution.sampled import integrated_gradients, smoothgrad
from auditor.errors import AttributionError

LayerWeighting = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""activations, gradients (Tensor[N, C, h, w]) -> Tensor[N, h, w], as in ``cam.py``."""


def finished(channel_maps: torch.Tensor, settings: GradientOptions) -> torch.Tensor:
    """Channel map (Tensor[N, C, H, W]) -> the method's map, modifier then reduction."""
    return reduced(modified(channel_maps.detach(), settings.modifier), settings.reduce)


def _gradients(gradients: torch.Tensor, _inputs: torch.Tensor) -> torch.Tensor:
    return gradients


def _gradient_x_input(gradients: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    return gradients * inputs


def input_method(
    name: str, rule: Rule, channel: ChannelMap = _gradients
) -> MethodSpec[GradientOptions]:
    """A method whose channel map is ``channel`` of the input gradient under ``rule`` (the
    gradient itself by default). The guided and deconv rules route the ReLUs in Python."""
    need: Need = (rule, "input")

    def finish(fused: FusedPass, settings: GradientOptions) -> torch.Tensor:
        return finished(channel(fused.gradients[need], fused.inputs), settings)

    return MethodSpec(
        name,
        finish,
        needs=(need,),
        eager=rule != "plain",
        options=GradientOptions,
        channel=channel,
    )


def layer_method(name: str, weighting: LayerWeighting) -> MethodSpec[None]:
    """A CAM-family method: ``weighting`` of the target layer's output and plain gradient."""

    def finish(fused: FusedPass, _settings: None) -> torch.Tensor:
        return layer_map(fused, weighting)

    return MethodSpec(name, finish, needs=(("plain", "layer"),), layer=True, eager=True)


def layer_map(fused: FusedPass, weighting: LayerWeighting) -> torch.Tensor:
    """``weighting`` at the target layer, upsampled to the inputs: Tensor[N, H, W]."""
    if fused.activations is None:
        raise AttributionError("Expected the target layer's output in the fused pass.")
    weighted = weighting(fused.activations, fused.gradients[("plain", "layer")])
    return cams.upsample(weighted, fused.size)


def _guided_gradcam(fused: FusedPass, settings: GradientOptions) -> torch.Tensor:
    """Guided backprop weighted by the Grad-CAM map (Selvaraju et al.)."""
    gradcam = layer_map(fused, cams.gradcam)
    return finished(fused.gradients[("guided", "input")] * gradcam[:, None], settings)


def _cam(fused: FusedPass, _settings: None) -> torch.Tensor:
    """CAM from the recorded head: Tensor[N, H, W]. Raises unless the logits come from a
    linear layer applied to the global average of a feature map."""
    head, selection = fused.head, fused.objective.selection
    if selection is None:
        raise AttributionError("CAM needs class targets (indices, sets or 'prediction').")
    if head.pooled is None or head.weight is None or not _is_gap_linear(head, fused.logits):
        raise AttributionError(
            "CAM needs a head of global average pooling followed by one linear layer "
            "(the logits must equal linear(mean of a feature map)); use gradcam instead."
        )
    weights = selection.to(head.weight.dtype) @ head.weight.detach()
    return cams.upsample(cams.class_activation_map(head.pooled.detach(), weights), fused.size)


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


def _smoothgrad(fused: FusedPass, settings: SmoothGradOptions) -> torch.Tensor:
    """SmoothGrad of the registered input-gradient method ``settings.base``."""
    base = REGISTRY.get(settings.base)
    if base.channel is None:
        raise AttributionError(f"Expected an input-gradient method as base, got {base.name}.")
    rule = base.needs[0][0]  # an input-gradient method needs one rule's input gradient
    grads = smoothgrad(
        fused.model,
        fused.inputs,
        fused.objective,
        settings,
        fused.captured,
        rule=rule,
        channel=base.channel,
    )
    return finished(grads, settings)


def _integrated_gradients(fused: FusedPass, settings: IntegratedGradientsOptions) -> torch.Tensor:
    grads = integrated_gradients(
        fused.model, fused.inputs, fused.objective, settings, fused.captured
    )
    return finished(grads, settings)


REGISTRY = MethodRegistry(
    [
        layer_method("gradcam", cams.gradcam),
        input_method("saliency", "plain"),
        input_method("gradient_x_input", "plain", _gradient_x_input),
        input_method("deconvnet", "deconv"),
        input_method("guided_backprop", "guided"),
        MethodSpec("cam", _cam, eager=True),
        layer_method("gradcam_pp", cams.gradcam_pp),
        layer_method("layercam", cams.layercam),
        MethodSpec(
            "guided_gradcam",
            _guided_gradcam,
            needs=(("guided", "input"), ("plain", "layer")),
            layer=True,
            eager=True,
            options=GradientOptions,
        ),
        MethodSpec("smoothgrad", _smoothgrad, options=SmoothGradOptions),
        MethodSpec(
            "integrated_gradients", _integrated_gradients, options=IntegratedGradientsOptions
        ),
    ]
)
"""Every built-in method; filled here at import and never changed."""

METHODS: tuple[str, ...] = REGISTRY.names
CAM_METHODS = frozenset(spec.name for spec in REGISTRY if spec.layer)
"""Methods that need a target layer."""
EAGER_METHODS = frozenset(spec.name for spec in REGISTRY if spec.eager)
"""Methods that watch the forward pass in Python (layer hooks, the ReLU rule or the head), so
they cannot run on TorchScript, whose forward pass runs outside Python."""
