"""Methods that average gradients over many copies of each input, batched.

SmoothGrad averages over noisy copies, integrated gradients over points on a path. The copies
of all samples go through the model together, up to ``max_batch`` images per pass. Both are
called by the engine inside its eval-mode, grad-enabled and hook-capturing context.
"""

from __future__ import annotations

import torch
from torch import nn

from auditor.attribution.gradient import ChannelMap, path_inputs, path_points, shared_noise
from auditor.attribution.options import IntegratedGradientsOptions, SmoothGradOptions
from auditor.attribution.rules import ForwardRecorder, Rule, RuleSwitch
from auditor.attribution.targets import Objective
from auditor.errors import AttributionError


def smoothgrad(
    model: nn.Module,
    inputs: torch.Tensor,
    objective: Objective,
    settings: SmoothGradOptions,
    captured: dict[str, torch.Tensor],
    *,
    rule: Rule,
    channel: ChannelMap,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al.): the base method's channel map, averaged over noisy copies.

    The base method is given by its ReLU ``rule`` and its ``channel`` map of the gradients.

    inputs (Tensor[N, C, H, W]) -> Tensor[N, C, H, W]
    """
    generator = torch.Generator(device=inputs.device).manual_seed(settings.seed)
    noise = shared_noise(
        inputs.shape[1:], samples=settings.samples, sigma=settings.sigma, generator=generator
    ).to(inputs.dtype)
    total = torch.zeros_like(inputs)
    for chunk in _chunks(noise, inputs.shape[0], settings.max_batch):
        noisy = (inputs.detach()[:, None] + chunk[None]).flatten(0, 1)
        grads = input_gradients(model, noisy, objective.repeated(len(chunk)), rule, captured)
        grads = channel(grads, noisy)
        total += grads.unflatten(0, (inputs.shape[0], len(chunk))).sum(dim=1)
    return total / settings.samples


def integrated_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    objective: Objective,
    settings: IntegratedGradientsOptions,
    captured: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al.) along the straight path from the baseline.

    inputs (Tensor[N, C, H, W]) -> Tensor[N, C, H, W]
    """
    inputs = inputs.detach()
    baselines = torch.as_tensor(settings.baseline).to(inputs).expand_as(inputs)
    alphas, weights = path_points(settings.steps, settings.quadrature)
    total = torch.zeros_like(inputs)
    for chunk in _chunks(
        torch.stack([alphas, weights], dim=1), inputs.shape[0], settings.max_batch
    ):
        points = path_inputs(inputs, baselines, chunk[:, 0])
        grads = input_gradients(model, points, objective.repeated(len(chunk)), "plain", captured)
        steps = grads.unflatten(0, (inputs.shape[0], len(chunk)))
        total += (steps * chunk[:, 1].to(steps)[None, :, None, None, None]).sum(dim=1)
    return total * (inputs - baselines)


def input_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    objective: Objective,
    rule: Rule,
    captured: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The gradient of the objective's scores under ``rule``, one forward and one backward.

    inputs (Tensor[N, C, H, W]) -> Tensor[N, C, H, W]
    """
    switch = RuleSwitch()
    switch.rule = rule
    leaf = inputs.detach().requires_grad_(True)
    with ForwardRecorder(switch):
        logits = model(leaf)
    if rule != "plain" and switch.rectifiers == 0:
        raise AttributionError(f"The {rule} rule needs ReLU units; the model called none.")
    logits = logits[:, None] if logits.dim() == 1 else logits
    total = objective.scores(logits, captured.get("filter")).sum()
    (grads,) = torch.autograd.grad(total, leaf)
    return grads


def _chunks(rows: torch.Tensor, n: int, max_batch: int) -> list[torch.Tensor]:
    """Split per-copy rows (Tensor[S, ...]) so that n * len(chunk) <= max_batch (at least 1)."""
    per = max(1, max_batch // n)
    return list(rows.split(per))
