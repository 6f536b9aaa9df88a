"""ReLU backward rules chosen at backward time, and a recorder for one forward pass.

During the engine's forward pass, :class:`ForwardRecorder` (a ``TorchFunctionMode``) routes
every rectifier call, whether an ``nn.ReLU``/``nn.ReLU6`` module (in-place or not, reused or
not) or a functional ``F.relu``/``torch.relu``/``Tensor.relu``/``relu_``/``F.relu6``, to
:class:`_Rectify`. Its backward reads the rule from a :class:`RuleSwitch` owned by that one
call, so a single recorded graph gives the plain, guided and deconv gradients in turn. No
module is replaced and no hook is registered; leaving the ``with`` block ends the routing.

The recorder also keeps the last global average pooling input and the last ``linear`` call,
which is what CAM (Zhou et al.) needs from a GAP + linear head.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

Rule = Literal["plain", "guided", "deconv"]
RULES: tuple[Rule, ...] = ("plain", "guided", "deconv")


class RuleSwitch:
    """The backward rule in force for one engine call, how many rectifiers were routed, and
    how many other nonlinearities (Hardswish, SiLU, GELU, sigmoid, ...) ran, by name: those
    pass the plain gradient whatever the rule, so a guided method on such a model is partial.
    """

    def __init__(self) -> None:
        self.rule: Rule = "plain"
        self.rectifiers = 0
        self.others: Counter[str] = Counter()


class _Rectify(torch.autograd.Function):
    """min(max(x, 0), upper) forward; the backward follows ``switch.rule``.

    plain: the true gradient. guided (Springenberg): positive gradients where the unit was
    active. deconv (Zeiler & Fergus): positive gradients, whatever the forward pass did.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, inputs: torch.Tensor, switch: RuleSwitch, upper: float, inplace: bool
    ) -> torch.Tensor:
        if math.isfinite(upper):
            outputs = inputs.clamp_(0.0, upper) if inplace else inputs.clamp(0.0, upper)
        else:
            outputs = inputs.relu_() if inplace else torch.relu(inputs)
        ctx.save_for_backward(outputs)
        if inplace:
            ctx.mark_dirty(inputs)
        ctx.switch, ctx.upper = switch, upper
        return outputs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (saved,) = ctx.saved_tensors
        rule: Rule = ctx.switch.rule
        if rule == "deconv":
            return grad.clamp_min(0.0), None, None, None
        if math.isfinite(ctx.upper):
            active = (saved > 0) & (saved < ctx.upper)
            passed = torch.where(active, grad, torch.zeros_like(grad))
        else:
            passed = torch.ops.aten.threshold_backward(grad, saved, 0)
        if rule == "guided":
            passed = passed.clamp_min(0.0)
        return passed, None, None, None


_RELU = {F.relu, torch.relu, torch.Tensor.relu}
_OTHER_NONLINEAR = {
    F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid", F.silu: "SiLU", F.gelu: "GELU",
    F.elu: "ELU", F.selu: "SELU", F.celu: "CELU", F.leaky_relu: "LeakyReLU", F.mish: "Mish",
    F.softplus: "Softplus", F.prelu: "PReLU", F.glu: "GLU", torch.sigmoid: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
    torch.Tensor.tanh: "tanh", F.tanh: "tanh",
}  # fmt: skip
_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_}
_GLOBAL_POOL = {F.adaptive_avg_pool2d}
_MEAN = {torch.mean, torch.Tensor.mean}


@dataclass
class HeadRecord:
    """What CAM reads from the forward pass: the pooled map and the last linear layer."""

    pooled: torch.Tensor | None = None  # Tensor[N, C, h, w], input of the last global pool
    linear_inputs: torch.Tensor | None = None  # Tensor[N, C]
    linear_outputs: torch.Tensor | None = None  # Tensor[N, K]
    weight: torch.Tensor | None = None  # Tensor[K, C]


class ForwardRecorder(TorchFunctionMode):
    """Route rectifiers to :class:`_Rectify` and record the head, for one forward pass."""

    def __init__(self, switch: RuleSwitch) -> None:
        super().__init__()
        self.switch = switch
        self.head = HeadRecord()

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        rectifier = _rectifier(func, args, kwargs)
        if rectifier is not None:
            inputs, upper, inplace = rectifier
            self.switch.rectifiers += 1
            return _Rectify.apply(inputs, self.switch, upper, inplace)
        other = _OTHER_NONLINEAR.get(func)
        if other is not None:
            self.switch.others[other] += 1
        outputs = func(*args, **kwargs)
        self._record(func, args, kwargs, outputs)
        return outputs

    def _record(self, func: Any, args: tuple[Any, ...], kwargs: Any, outputs: Any) -> None:
        if _is_global_pool(func, args, kwargs):
            self.head.pooled = args[0]
        elif func is F.linear and isinstance(outputs, torch.Tensor):
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.head.linear_inputs, self.head.linear_outputs = args[0], outputs
            self.head.weight = weight


def _rectifier(func: Any, args: tuple[Any, ...], kwargs: Any) -> tuple[Any, float, bool] | None:
    """(input, upper bound, in place) when ``func`` is a rectifier call, else None."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    if func in _RELU:
        return args[0], math.inf, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in _RELU_INPLACE:
        return args[0], math.inf, True
    if func is F.relu6:
        return args[0], 6.0, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func is F.hardtanh:
        params = dict(zip(("min_val", "max_val", "inplace"), args[1:]), **kwargs)
        if float(params.get("min_val", -1.0)) == 0.0:
            return args[0], float(params.get("max_val", 1.0)), bool(params.get("inplace", False))
    return None


def _is_global_pool(func: Any, args: tuple[Any, ...], kwargs: Any) -> bool:
    """``adaptive_avg_pool2d(x, 1)`` or a mean over the two spatial dimensions."""
    if func in _GLOBAL_POOL:
        size = args[1] if len(args) > 1 else kwargs["output_size"]
        sizes = size if isinstance(size, (tuple, list)) else (size,)
        return all(s == 1 for s in sizes)
    return func in _MEAN and _is_spatial_mean(args, kwargs)


def _is_spatial_mean(args: tuple[Any, ...], kwargs: Any) -> bool:
    inputs, dims = args[0], args[1] if len(args) > 1 else kwargs.get("dim")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or dims is None:
        return False
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    return sorted(int(d) % 4 for d in dims) == [2, 3]
