"""Input-space maps from gradients: modifiers, channel reductions, noise and paths.

Pure tensor functions. A *channel map* is ``Tensor[N, C, H, W]`` (a gradient, or gradient x
input); :func:`reduced` turns it into the ``Tensor[N, H, W]`` map that is scored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

Reduce = Literal["max_abs", "signed", "channels"]
Modifier = Literal["absolute", "relu", "negate", "small_values"]
Quadrature = Literal["gausslegendre", "riemann_trapezoid"]
REDUCTIONS: tuple[Reduce, ...] = ("max_abs", "signed", "channels")
MODIFIERS: tuple[Modifier, ...] = ("absolute", "relu", "negate", "small_values")
QUADRATURES: tuple[Quadrature, ...] = ("gausslegendre", "riemann_trapezoid")
SMALL_VALUES_EPS = 1e-7
ChannelMap = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""gradients, inputs (Tensor[N, C, H, W]) -> a method's channel map (Tensor[N, C, H, W])."""


def saliency(gradients: torch.Tensor) -> torch.Tensor:
    """Vanilla gradient saliency (Simonyan et al.): max over colour channels of |dy/dx|.

    gradients (Tensor[N, C, H, W]) -> Tensor[N, H, W]
    """
    return gradients.abs().amax(dim=1)


def modified(maps: torch.Tensor, modifier: Modifier | None) -> torch.Tensor:
    """A gradient modifier (keras-vis), each giving a non-negative channel map.

    absolute: |g|, what changes the output; relu: what increases it; negate: what decreases
    it; small_values: 1 / (|g| + eps), what keeps it as it is.

    maps (Tensor[N, C, H, W]) -> Tensor[N, C, H, W]
    """
    if modifier is None:
        return maps
    if modifier == "absolute":
        return maps.abs()
    if modifier == "relu":
        return torch.relu(maps)
    if modifier == "negate":
        return torch.relu(-maps)
    return 1.0 / (maps.abs() + SMALL_VALUES_EPS)


def reduced(maps: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    """Reduce a channel map over colour channels.

    max_abs: max |value| (non-negative, what the pipeline scores); signed: the value of
    largest magnitude, its sign kept; channels: no reduction (Tensor[N, C, H, W]).

    maps (Tensor[N, C, H, W]) -> Tensor[N, H, W], or Tensor[N, C, H, W] for ``channels``
    """
    if reduce == "channels":
        return maps
    if reduce == "max_abs":
        return saliency(maps)
    strongest = maps.abs().argmax(dim=1, keepdim=True)
    return maps.gather(1, strongest)[:, 0]


def shared_noise(
    shape: torch.Size, *, samples: int, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise for SmoothGrad, the same draws for every sample of a batch.

    Sharing the draws keeps a sample's map independent of the rest of its batch.

    shape (C, H, W) -> Tensor[S, C, H, W] on the generator's device
    """
    noise = torch.randn((samples, *shape), generator=generator, device=generator.device)
    return noise * sigma


def path_points(steps: int, quadrature: Quadrature) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and weights of a quadrature of the straight path from baseline to input.

    -> (alphas Tensor[S], weights Tensor[S]) in float64; sum(weights) == 1.
    """
    if quadrature == "gausslegendre":
        nodes, spans = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1)), torch.from_numpy(0.5 * spans)
    alphas = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    weights = torch.full((steps,), 1.0 / max(steps - 1, 1), dtype=torch.float64)
    weights[[0, -1]] /= 2
    return alphas, weights / weights.sum()


def path_inputs(
    inputs: torch.Tensor, baselines: torch.Tensor, alphas: torch.Tensor
) -> torch.Tensor:
    """Points on the straight path, sample-major.

    inputs, baselines (Tensor[N, C, H, W]), alphas (Tensor[S]) -> Tensor[N * S, C, H, W]
    """
    alphas = alphas.to(inputs)[None, :, None, None, None]
    points = baselines[:, None] + alphas * (inputs - baselines)[:, None]
    return points.flatten(0, 1)
