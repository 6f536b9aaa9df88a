"""Can a method be trusted to drive a flag? Two checks, each naming its reason.

- Resolution: a CAM cannot localise below its layer's cell size. When one cell spans more
  pixels than the median object's side, the map cannot tell object from surroundings.
- Model randomisation (Adebayo et al. 2018): maps of a model whose weights were all
  re-initialised should look unlike the trained model's. A method whose maps stay similar
  (Spearman rank correlation above a threshold) shows the input's structure, not what the
  model learned.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from auditor.attribution import compute
from auditor.attribution.engine import CAM_METHODS
from auditor.models import TargetLayer
from auditor.scoring import average_ranks


def resolution_check(
    methods: Sequence[str], *, cells: tuple[int, int] | None, image_size: int, object_side: float
) -> dict[str, str]:
    """CAM methods that cannot localise objects of median side ``object_side`` pixels."""
    if cells is None or not math.isfinite(object_side):
        return {}
    cell = image_size / min(cells)
    if cell <= object_side:
        return {}
    reason = (
        f"one CAM cell spans {cell:.0f} px, more than the median object side ({object_side:.0f} px)"
    )
    return {m: reason for m in methods if m in CAM_METHODS}


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row Spearman rank correlation, ties at their average rank (as scipy's
    ``spearmanr``), on the inputs' device. a, b (Tensor[N, P]) -> Tensor[N]; NaN where a row
    is constant, whose correlation is undefined.

    Ties matter here: a CAM is 0 on most cells after its ReLU, and ranking those cells
    by their position in memory (argsort of argsort) made unrelated sparse maps correlate."""
    ra, rb = average_ranks(a.double()), average_ranks(b.double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = ra.norm(dim=1) * rb.norm(dim=1)
    correlation = (ra * rb).sum(1) / denominator
    return torch.where(denominator > 0, correlation, torch.nan).float()


def randomized_copy(model: nn.Module, *, seed: int) -> nn.Module:
    """A deep copy of ``model`` with every resettable module re-initialised.

    TorchScript modules keep no ``reset_parameters``; there every parameter is redrawn
    instead: matrices and kernels with PyTorch's default (Kaiming-uniform) initialisation,
    vectors by shuffling their own values, and batch-norm statistics reset.
    """
    clone = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        reset = 0
        for module in clone.modules():
            method = getattr(module, "reset_parameters", None)
            if callable(method):
                method()
                reset += 1
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
        if not reset:
            _redraw(clone)
    finally:
        torch.random.set_rng_state(state)
    return clone.eval()


@torch.no_grad()
def _redraw(model: nn.Module) -> None:
    for parameter in model.parameters():
        if parameter.dim() >= 2:
            nn.init.kaiming_uniform_(parameter, a=math.sqrt(5))
        else:
            shuffled = parameter.flatten()[torch.randperm(parameter.numel())]
            parameter.copy_(shuffled.view_as(parameter))
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.zero_()
        elif name.endswith("running_var"):
            buffer.fill_(1.0)


def randomization_check(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    methods: Sequence[str],
    *,
    target_layer: TargetLayer | None,
    max_similarity: float,
    seed: int = 0,
    original: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """(mean Spearman similarity per method, methods that fail with the reason).
    ``original``: the trained model's maps of ``inputs``, when the caller has them."""
    if inputs.shape[0] == 0:
        return {}, {}
    random_model = randomized_copy(model, seed=seed)
    if original is None:
        original = compute(
            model, inputs, targets, methods=methods, target_layer=_layer(model, target_layer)
        ).maps
    randomized = compute(
        random_model,
        inputs,
        targets,
        methods=methods,
        target_layer=_layer(random_model, target_layer),
    )
    similarity = {  # NaN (undefined) when every map of a method is constant
        m: float(spearman(original[m].flatten(1), randomized.maps[m].flatten(1)).nanmean())
        for m in methods
    }
    failed = {
        m: "maps of a randomly re-initialised model stay similar "
        f"(Spearman {s:.2f} > {max_similarity})"
        for m, s in similarity.items()
        if s > max_similarity
    }
    return similarity, failed


def _layer(model: nn.Module, layer: TargetLayer | None) -> TargetLayer | None:
    """The same layer (name and layout) in ``model``, a copy of the model it was found in."""
    if layer is None:
        return None
    return dataclasses.replace(layer, module=dict(model.named_modules())[layer.name])
