"""Geometry applied identically to an image and its mask; only the image is normalised."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from auditor.config import parse_normalize


class AuditTransform:
    """Resize to ``image_size`` x ``image_size``; masks resample nearest, so they stay binary."""

    def __init__(self, image_size: int, normalize: str = "imagenet") -> None:
        self.image_size = image_size
        self.geometry = v2.Resize((image_size, image_size), antialias=True)
        self.stats = parse_normalize(normalize)

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (inputs Tensor[3, S, S] float32, masks Tensor[S, S] bool)."""
        pixels = tv_tensors.Image(F.pil_to_tensor(image))
        target = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)))
        pixels, target = self.geometry(pixels, target)
        inputs = F.to_dtype(pixels.as_subclass(torch.Tensor), torch.float32, scale=True)
        return self.normalize(inputs), target.as_subclass(torch.Tensor).bool()

    def normalize(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.stats is None:
            return inputs
        mean, std = self.stats
        return F.normalize(inputs, list(mean), list(std))

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize` for display: ``Tensor[..., 3, H, W]`` in [0, 1]."""
        if self.stats is None:
            return inputs.clamp(0, 1)
        mean, std = (torch.tensor(v, device=inputs.device).view(3, 1, 1) for v in self.stats)
        return (inputs * std + mean).clamp(0, 1)
