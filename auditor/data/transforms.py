"""Geometry applied identically to an image, its mask and its ignore region (torchvision
``transforms.v2`` on ``tv_tensors``; masks resample nearest, so they stay binary). Only the
image is normalised.

Geometries, all ending at ``S x S``:

- ``stretch`` (default): resize both sides to ``S``; the aspect ratio changes.
- ``pad`` (``--keep-aspect``): resize the long side to ``S``, then pad the short side evenly
  (letterbox). Padded pixels hold the normalisation mean (0 after normalising) and are
  marked as ignore, so no metric counts them. Nothing of the image is lost.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from auditor.errors import ConfigError

Geometry = Literal["stretch", "pad"]
GEOMETRIES: tuple[Geometry, ...] = ("stretch", "pad")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``imagenet`` | ``none`` | ``M,M,M/S,S,S`` -> (mean, std) or None."""
    if text == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if text == "none":
        return None
    try:
        mean_text, std_text = text.split("/")
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise ConfigError(
            f"Expected --normalize imagenet, none or M,M,M/S,S,S, got {text!r}."
        ) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"Expected 3 means and 3 positive stds in --normalize, got {text!r}.")
    return mean, std


class AuditTransform:
    """Decoded image + bool masks -> model inputs and masks at ``image_size`` x ``image_size``."""

    def __init__(
        self, image_size: int, normalize: str = "imagenet", *, geometry: Geometry = "stretch"
    ) -> None:
        if geometry not in GEOMETRIES:
            raise ConfigError(f"Expected geometry from {GEOMETRIES}, got {geometry!r}.")
        self.image_size = image_size
        self.geometry = _geometry(image_size, geometry)
        self.stats = parse_normalize(normalize)

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (inputs Tensor[3, S, S] float32, masks Tensor[S, S] bool)."""
        inputs, masks, _ = self.apply(image, mask)
        return inputs, masks

    def apply(
        self, image: Image.Image, mask: np.ndarray, ignore: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image (H x W) with mask and ignore (bool ndarray[H, W]) -> (inputs Tensor[3, S, S]
        float32, masks Tensor[S, S] bool, ignore Tensor[S, S] bool). Ignore also covers
        padding."""
        pixels = tv_tensors.Image(F.pil_to_tensor(image))
        height, width = pixels.shape[-2:]
        valid = torch.ones(height, width, dtype=torch.uint8)
        extra = _as_mask(ignore, height, width)
        out = self.geometry(pixels, _as_mask(mask, height, width), extra, tv_tensors.Mask(valid))
        pixels, masks, ignored, inside = (t.as_subclass(torch.Tensor) for t in out)
        inside = inside.bool()
        inputs = self.normalize(F.to_dtype(pixels, torch.float32, scale=True))
        inputs = torch.where(inside, inputs, torch.zeros(()))
        return inputs, masks.bool() & inside, ignored.bool() | ~inside

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


def _geometry(size: int, geometry: Geometry) -> v2.Transform:
    if geometry == "pad":
        return v2.Compose([v2.Resize(None, max_size=size, antialias=True), v2.CenterCrop(size)])
    return v2.Resize((size, size), antialias=True)


def _as_mask(mask: np.ndarray | None, height: int, width: int) -> tv_tensors.Mask:
    if mask is None:
        return tv_tensors.Mask(torch.zeros(height, width, dtype=torch.uint8))
    return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8)))
