"""The layer a CAM reads: found by watching a forward and a backward pass, not by name.

A layer's output is a feature map in one of three layouts: ``nchw`` (Tensor[N, C, H, W],
convolutional networks), ``nhwc`` (Tensor[N, H, W, C], the stages of Swin transformers) or
``tokens`` (Tensor[N, P + h*w, C], a transformer's square token grid after P = 0-2 class or
distillation tokens). The layout of a 4-D output is established by perturbing the input's
top-left quarter and watching where the change lands, never guessed from its shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from auditor.errors import ModelError
from auditor.models.outputs import LastLinear, logits_of

MIN_CAM_CELLS = 7
MAX_PREFIX_TOKENS = 2  # class token, and a distillation token (DeiT)

Layout = Literal["nchw", "nhwc", "tokens"]
PADDING = (nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d)


@dataclass(frozen=True)
class TargetLayer:
    name: str
    module: nn.Module
    cells: tuple[int, int]
    automatic: bool
    layout: Layout = "nchw"


@dataclass(frozen=True)
class _Seen:
    """A module's output as a feature map: its grid, layout, whether a normalisation layer
    made it (a transformer's CAM reads the normalised tokens that enter a block), and
    whether it can be chosen by itself: not a padding layer (its grid has a border that
    is not the image's), and called once per forward pass (an activation module reused
    at the stem and the head would be read wherever it ran last)."""

    cells: tuple[int, int]
    layout: Layout
    norm: bool
    choosable: bool = True


def resolve_target_layer(
    model: nn.Module, name: str | None, *, image_size: int, device: torch.device | None = None
) -> TargetLayer:
    """The layer whose activations a CAM weighs.

    With ``name``, the module of that dotted name, in whichever layout its output has.
    Otherwise the deepest feature map whose every position still reaches the logits (a
    backward pass tells), made by a module called once that is not a padding layer: the
    last convolutional map before global pooling; for a Swin transformer its last
    channels-last stage; for a transformer that reads its class token, the normalised token
    grid that enters its last block, since after the last attention only the class token
    reaches the head. Transformer tokens count only as a normalisation
    layer's output. When the chosen map is coarser than 7x7 cells (resnet18 at 64 px ends at
    2x2), the deepest such layer that still has at least 7x7 cells, since a CAM cannot
    localise below its layer's resolution.
    """
    seen = _feature_maps(model, image_size=image_size, device=device)
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            raise ModelError(f"--target-layer {name!r}: no such module in the model.")
        if name not in seen:
            raise ModelError(
                f"--target-layer {name!r}: its output is not a spatial feature map "
                "(Tensor[N, C, H, W] or [N, H, W, C]) or a square token grid "
                f"(Tensor[N, P + H*W, C]); layers that work: {', '.join(_deepest(seen))}."
            )
        found = seen[name]
        return TargetLayer(name, modules[name], found.cells, False, found.layout)
    candidates = {n: s for n, s in seen.items() if s.choosable and (s.layout != "tokens" or s.norm)}
    reaching = _reaching(model, candidates, image_size=image_size, device=device)
    spatial = [n for n in candidates if n in reaching and math.prod(candidates[n].cells) > 1]
    if not spatial:
        raise ModelError("No spatial feature map found for a CAM; give --target-layer.")
    fine = [n for n in spatial if min(candidates[n].cells) >= MIN_CAM_CELLS]
    chosen = (fine or spatial)[-1]
    found = candidates[chosen]
    return TargetLayer(chosen, modules[chosen], found.cells, True, found.layout)


def _deepest(seen: dict[str, _Seen], count: int = 4) -> list[str]:
    """The deepest few layers a CAM can read, deepest first, for an error message."""
    fine = [n for n, s in seen.items() if min(s.cells) >= MIN_CAM_CELLS]
    return (fine or list(seen))[::-1][:count] or ["none found"]


def token_prefix(length: int) -> int | None:
    """How many tokens come before a square grid of ``length`` tokens (0-2), or None when
    no square grid of at least 2x2 fits."""
    side = math.isqrt(length)
    prefix = length - side * side
    return prefix if side > 1 and prefix <= MAX_PREFIX_TOKENS else None


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.GroupNorm) or "Norm" in type(module).__name__


def _feature_maps(
    model: nn.Module, *, image_size: int, device: torch.device | None
) -> dict[str, _Seen]:
    """Each module whose output is a feature map, in the order the modules finish (a reused
    module counts at its last use).

    The layout of a 4-D output is established, not guessed from the shape: the top-left
    quarter of the input is perturbed, and a layer is channels-last when the change in its
    output gathers in the top-left of dims 1 and 2 clearly more than in dims 2 and 3."""
    outputs: dict[str, list[torch.Tensor]] = {}
    order: list[str] = []

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() in (3, 4):
                outputs.setdefault(name, []).append(output.detach())
                if name in order:
                    order.remove(name)
                order.append(name)

        return hook

    modules = dict(model.named_modules())
    handles = [m.register_forward_hook(record(n)) for n, m in modules.items() if n]
    was_training = model.training
    try:
        model.eval()
        base = _probe_input(image_size)
        moved = base.clone()
        quarter = max(1, image_size // 4)
        moved[:, :, :quarter, :quarter] += 2.0
        device = device or _device_of(model)
        with torch.no_grad():
            model(base.to(device))
            first = {n: v[-1] for n, v in outputs.items()}
            outputs.clear()
            model(moved.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    seen: dict[str, _Seen] = {}
    for name in order:
        out = first.get(name)
        if out is None or name not in outputs or outputs[name][-1].shape != out.shape:
            continue
        change = (outputs[name][-1] - out).abs()
        if not bool(change.any()):  # made from parameters alone (a position bias table)
            continue
        norm = _is_norm(modules[name])
        choosable = len(outputs[name]) == 1 and not isinstance(modules[name], PADDING)
        if out.dim() == 4:  # a square input makes a square map: [N, heads, tokens, d] is none
            nhwc = _channels_last(change)
            h, w = (out.shape[1], out.shape[2]) if nhwc else (out.shape[2], out.shape[3])
            if h == w:
                layout: Layout = "nhwc" if nhwc else "nchw"
                seen[name] = _Seen((int(h), int(w)), layout, norm, choosable)
        elif (prefix := token_prefix(int(out.shape[1]))) is not None:
            side = math.isqrt(int(out.shape[1]) - prefix)
            seen[name] = _Seen((side, side), "tokens", norm, choosable)
    return seen


def _reaching(
    model: nn.Module, candidates: dict[str, _Seen], *, image_size: int, device: torch.device | None
) -> set[str]:
    """The candidates at whose grid positions the logits have a gradient: after a
    transformer's last attention, only its class token has one."""
    kept: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> object:
            if not isinstance(output, torch.Tensor):
                return None
            kept[name] = output
            return output.clone()  # later in-place ops must not touch the kept output

        return hook

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(keep(n)) for n in candidates]
    was_training = model.training
    try:
        model.eval()
        inputs = _probe_input(image_size).to(device or _device_of(model)).requires_grad_()
        head = LastLinear()
        with torch.enable_grad(), head:
            logits = logits_of(model(inputs))
        # What the head reads (a zero-initialised head would leave the logits flat), projected
        # on fixed random weights (a plain sum through a final LayerNorm is a constant)
        features = (head.features if head.features is not None else logits).float().flatten(1)
        weights = torch.randn(features.shape, generator=torch.Generator().manual_seed(1))
        names = [n for n in kept if kept[n].requires_grad]
        wrt = [kept[n] for n in names]
        score = (features * weights.to(features.device)).sum()
        grads = torch.autograd.grad(score, wrt, allow_unused=True) if wrt else ()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    reaching = set()
    for name, grad in zip(names, grads):
        if grad is None:
            continue
        grid = grad.abs()
        if candidates[name].layout == "tokens":
            grid = grid[:, token_prefix(grid.shape[1]) :]
        if float(grid.sum()) > 1e-6 * float(grad.abs().sum()) > 0:
            reaching.add(name)
    return reaching


def _probe_input(image_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, image_size, image_size, generator=generator)


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _channels_last(change: torch.Tensor, margin: float = 0.15) -> bool:
    """Whether the change Tensor[1, A, B, C] of a layer's output, after the input's top-left
    quarter moved, sits in the top-left of (A, B) clearly more than of (B, C). Where neither
    layout is clearly ahead (a layer that mixes every position, such as attention over one
    window), the square input decides: a square (A, B) beside a non-square (B, C)."""

    def top_left(m: torch.Tensor) -> float:
        total = float(m.sum())
        h, w = (m.shape[-2] + 1) // 2, (m.shape[-1] + 1) // 2
        return float(m[..., :h, :w].sum()) / total if total > 0 else 0.0

    last, first = top_left(change.sum(3)), top_left(change.sum(1))
    if abs(last - first) > margin:
        return last > first
    _, a, b, c = change.shape
    return a == b != c
