"""Maps from the gradient of the target score with respect to the input (pure functions)."""

from __future__ import annotations

import torch


def saliency(gradients: torch.Tensor) -> torch.Tensor:
    """Vanilla gradient saliency (Simonyan et al.): max over colour channels of |dy/dx|.

    gradients (Tensor[N, C, H, W]) -> Tensor[N, H, W]
    """
    return gradients.abs().amax(dim=1)
