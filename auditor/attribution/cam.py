"""Class activation maps from a layer's activations and gradients (pure tensor functions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al.): ReLU of the activations weighted by mean gradients.

    activations, gradients (Tensor[N, C, h, w]) -> Tensor[N, h, w]
    """
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of low-resolution maps to the input size.

    maps (Tensor[N, h, w]) -> Tensor[N, H, W]
    """
    if maps.shape[-2:] == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
