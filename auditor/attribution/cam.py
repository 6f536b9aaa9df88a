"""Class activation maps from a layer's activations and gradients (pure tensor functions).

Every function takes ``activations, gradients (Tensor[N, C, h, w])`` of the same layer and
returns ``Tensor[N, h, w]``, non-negative (the ReLU of the weighted sum, as in the papers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from auditor.errors import AttributionError
from auditor.models.layers import token_prefix


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU of the activations weighted by mean gradients.

    activations, gradients (Tensor[N, C, h, w]) -> Tensor[N, h, w]
    """
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))


def gradcam_pp(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al.), with the exponential-score closed form.

    The higher derivatives of exp(score) are powers of the first, so the pixel weights are
    alpha = g^2 / (2 g^2 + sum(A) g^3), and zero where that denominator is zero. No epsilon
    is added, so the map does not depend on the scale of the gradients.

    activations, gradients (Tensor[N, C, h, w]) -> Tensor[N, h, w]
    """
    squared = gradients.pow(2)
    totals = activations.sum(dim=(2, 3), keepdim=True)
    denominator = 2 * squared + totals * squared * gradients
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alphas = torch.where(denominator != 0, squared / safe, torch.zeros_like(squared))
    weights = (alphas * torch.relu(gradients)).sum(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))


def layercam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al.): activations weighted cell by cell by positive gradients.

    activations, gradients (Tensor[N, C, h, w]) -> Tensor[N, h, w]
    """
    return torch.relu((torch.relu(gradients) * activations).sum(dim=1))


def class_activation_map(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al.): the head's class weights applied to the pooled feature map, ReLU'd.

    activations (Tensor[N, C, h, w]), weights (Tensor[N, C]: each sample's target row of the
    linear head) -> Tensor[N, h, w]
    """
    return torch.relu(torch.einsum("nc,nchw->nhw", weights.to(activations.dtype), activations))


def token_grid(tokens: torch.Tensor) -> torch.Tensor:
    """A transformer's tokens as a feature map, the class (and distillation) tokens dropped.

    tokens (Tensor[N, P + h*w, C], P = 0-2) -> Tensor[N, C, h, w] (square grid)
    """
    prefix = token_prefix(tokens.shape[1]) if tokens.dim() == 3 else None
    if prefix is None:
        raise AttributionError(
            "Expected tokens of shape (N, P + h*w, C) with a square grid after P = 0-2 "
            f"class tokens, got {tuple(tokens.shape)}."
        )
    side = math.isqrt(tokens.shape[1] - prefix)
    grid = tokens[:, prefix:].transpose(1, 2)
    return grid.reshape(tokens.shape[0], tokens.shape[2], side, side)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of low-resolution maps to the input size.

    maps (Tensor[N, h, w]) -> Tensor[N, H, W]
    """
    if maps.shape[-2:] == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
