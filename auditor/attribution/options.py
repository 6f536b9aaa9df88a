"""Per-method options, given as ``options={"saliency": {"reduce": "signed"}}``.

Every input-space method takes :class:`GradientOptions`; SmoothGrad and integrated gradients
add their own. Layer methods (CAM family) take none. Each method's registry entry names the
dataclass it takes (``methods.py``). The pipeline scores the defaults, which
are non-negative maps (``reduce="max_abs"``); ``signed`` and ``channels`` are for viewing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import torch

from auditor.attribution.gradient import MODIFIERS, QUADRATURES, REDUCTIONS, Modifier, Quadrature
from auditor.attribution.gradient import Reduce as Reduce
from auditor.errors import AttributionError

SmoothBase = Literal["saliency", "gradient_x_input", "guided_backprop", "deconvnet"]
"""The registered input-gradient methods (a ``channel`` in their spec) SmoothGrad can average."""
SMOOTH_BASES: tuple[SmoothBase, ...] = get_args(SmoothBase)


@dataclass(frozen=True)
class GradientOptions:
    """reduce: over colour channels (see ``gradient.reduced``); modifier: applied before it."""

    reduce: Reduce = "max_abs"
    modifier: Modifier | None = None

    def __post_init__(self) -> None:
        _check_choice("reduce", self.reduce, REDUCTIONS)
        if self.modifier is not None:
            _check_choice("modifier", self.modifier, MODIFIERS)


@dataclass(frozen=True)
class SmoothGradOptions(GradientOptions):
    """SmoothGrad (Smilkov et al.): ``base`` averaged over ``samples`` noisy copies.

    sigma: the noise's standard deviation in input units; seed: of the noise generator;
    max_batch: most images in one forward pass (noisy copies are batched up to it).
    """

    samples: int = 16
    sigma: float = 0.15
    seed: int = 0
    base: SmoothBase = "saliency"
    max_batch: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("base", self.base, SMOOTH_BASES)
        _check_positive(samples=self.samples, max_batch=self.max_batch)
        if not self.sigma >= 0:
            raise AttributionError(f"Expected smoothgrad sigma >= 0, got {self.sigma}.")


@dataclass(frozen=True)
class IntegratedGradientsOptions(GradientOptions):
    """Integrated gradients (Sundararajan et al.) from ``baseline`` (a number or a tensor
    broadcastable to the inputs), with ``steps`` quadrature points batched up to ``max_batch``.
    """

    steps: int = 32
    baseline: float | torch.Tensor = 0.0
    quadrature: Quadrature = "gausslegendre"
    max_batch: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("quadrature", self.quadrature, QUADRATURES)
        _check_positive(steps=self.steps, max_batch=self.max_batch)


def parsed(
    methods: tuple[str, ...],
    raw: Mapping[str, Mapping[str, Any] | GradientOptions] | None,
    kinds: Mapping[str, type[GradientOptions]],
) -> dict[str, GradientOptions]:
    """Options for every method in ``methods`` that takes some, defaults filled in.

    kinds: {method: the options dataclass it takes}, for the methods that take options.
    """
    raw = raw or {}
    stray = sorted(set(raw) - set(methods))
    if stray:
        raise AttributionError(f"Options given for {stray}, which are not among {list(methods)}.")
    no_options = sorted(m for m in raw if m not in kinds)
    if no_options:
        raise AttributionError(f"Expected no options for {no_options}: they take none.")
    return {m: _one(m, raw.get(m), kinds[m]) for m in methods if m in kinds}


def _one(
    method: str, given: Mapping[str, Any] | GradientOptions | None, kind: type[GradientOptions]
) -> GradientOptions:
    if given is None:
        return kind()
    if isinstance(given, kind):
        return given
    if isinstance(given, GradientOptions):
        raise AttributionError(
            f"Expected {kind.__name__} for {method}, got {type(given).__name__}."
        )
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise AttributionError(
            f"Unknown option(s) {unknown} for {method}; expected {sorted(known)}."
        )
    return kind(**given)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise AttributionError(f"Expected {name} from {list(choices)}, got {value!r}.")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise AttributionError(f"Expected {name} a positive integer, got {value!r}.")
