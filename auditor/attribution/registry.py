"""The method registry: one :class:`MethodSpec` per attribution method, read by the engine.

A spec says what its method needs from the engine's fused pass (the gradient of each ReLU rule
with respect to the input or the target layer), whether it needs a target layer, whether its
forward pass must run in Python, which options it takes, and its *finisher*: the small
function that turns the :class:`FusedPass` into the method's map. ``methods.py`` builds the
registry of the built-in methods at import; it is read-only afterwards. A caller with a method
of its own hands the engine ``REGISTRY.extended(spec)`` (``registry=``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import torch
from torch import nn

from auditor.attribution.gradient import ChannelMap
from auditor.attribution.options import GradientOptions
from auditor.attribution.rules import HeadRecord, Rule
from auditor.attribution.targets import Objective
from auditor.errors import AttributionError

Part = Literal["input", "layer"]
Need = tuple[Rule, Part]
"""A gradient of the fused pass: under which ReLU rule, and with respect to what."""
OptionsT = TypeVar("OptionsT", bound=GradientOptions | None)


@dataclass(frozen=True)
class FusedPass:
    """What the engine's fused pass leaves for the finishers, for one target."""

    model: nn.Module
    inputs: torch.Tensor  # Tensor[N, C, H, W], detached
    logits: torch.Tensor  # Tensor[N, K], detached
    objective: Objective
    gradients: Mapping[Need, torch.Tensor]  # input: Tensor[N, C, H, W]; layer: Tensor[N, C, h, w]
    activations: torch.Tensor | None  # the target layer's output, Tensor[N, C, h, w], detached
    head: HeadRecord  # what CAM reads: the last global pool and linear layer
    captured: dict[str, torch.Tensor]  # the hooks' live outputs, for methods with their own passes

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the inputs, the size every map is brought to."""
        return int(self.inputs.shape[-2]), int(self.inputs.shape[-1])


@dataclass(frozen=True)
class MethodSpec(Generic[OptionsT]):
    """One attribution method.

    finish: (fused pass, the method's options or None) -> Tensor[N, H, W] (or a channel map).
    needs: the gradients it reads; methods asking for the same rule share one backward.
    layer: it needs a target layer. eager: it watches the forward pass in Python (layer hooks,
    ReLU routing or the head), so it cannot run on TorchScript. options: the dataclass of its
    ``options={name: ...}`` (None: it takes none). channel: for a method whose map is one
    rule's input gradient, (gradients, inputs) -> its channel map; SmoothGrad can average it.
    """

    name: str
    finish: Callable[[FusedPass, OptionsT], torch.Tensor]
    needs: tuple[Need, ...] = ()
    layer: bool = False
    eager: bool = False
    options: type[OptionsT] | None = None
    channel: ChannelMap | None = None


class MethodRegistry:
    """Method specs by name, in registration order; read-only once built."""

    def __init__(self, specs: Iterable[MethodSpec[Any]]) -> None:
        self._specs: dict[str, MethodSpec[Any]] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise AttributionError(f"Expected one spec per method, got two for {spec.name!r}.")
            self._specs[spec.name] = spec

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def get(self, name: str) -> MethodSpec[Any]:
        """The spec of ``name``; an unknown name raises, listing the known ones."""
        if name not in self._specs:
            raise AttributionError(f"Expected a method from {list(self._specs)}, got {name!r}.")
        return self._specs[name]

    def extended(self, *specs: MethodSpec[Any]) -> MethodRegistry:
        """A new registry with ``specs`` after these; this one stays as it is."""
        return MethodRegistry([*self._specs.values(), *specs])

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[MethodSpec[Any]]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)
