"""Interventions on the image, built from its object mask (pure tensor functions).

- background swapped: the object pasted onto another image's background, whose own object
  region is filled first;
- background only: the object region filled from the surrounding background;
- object only: the background replaced by the dataset mean (zero after normalisation).

The fill is a normalised-convolution blur: each filled pixel is the mean of the kept pixels
in a window around it. It removes the object's shape and texture, leaving the local colour.
The region filled is the mask dilated by ``margin`` (3% of the image side): annotations and
rendered objects disagree by a pixel or two at the edge, and an unfilled rim would leave the
object's outline behind for the model to recognise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FILL = (
    "blur"  # named in the report: the object region is filled by a local mean of its surroundings
)


def fill_region(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Replace ``region`` pixels by a local mean of the pixels outside it.

    inputs (Tensor[N, C, H, W]), region (Tensor[N, H, W] bool) -> Tensor[N, C, H, W]
    """
    keep = (~region).to(inputs.dtype)[:, None]
    filled = inputs * keep
    weight = keep
    size = max(3, (min(inputs.shape[-2:]) // 4) | 1)
    num = F.avg_pool2d(filled, size, stride=1, padding=size // 2, count_include_pad=False)
    den = F.avg_pool2d(weight, size, stride=1, padding=size // 2, count_include_pad=False)
    global_mean = filled.sum((2, 3), keepdim=True) / weight.sum((2, 3), keepdim=True).clamp_min(1)
    local = torch.where(den > 1e-6, num / den.clamp_min(1e-6), global_mean)
    return torch.where(region[:, None], local, inputs)


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow bool masks by ``radius`` pixels (square structuring element).

    masks (Tensor[N, H, W] bool) -> Tensor[N, H, W] bool
    """
    if radius <= 0:
        return masks
    grown = F.max_pool2d(masks[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return grown[:, 0] > 0


def margin(masks: torch.Tensor) -> int:
    """The dilation used before filling an object region: 3% of the image side, at least 1."""
    return max(1, round(0.03 * min(masks.shape[-2:])))


def remove_object(inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The object region, dilated by :func:`margin`, filled from its surroundings."""
    return fill_region(inputs, dilate(masks, margin(masks)))


def swap_background(
    inputs: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor
) -> torch.Tensor:
    """The objects of ``inputs`` pasted onto ``backgrounds`` (already object-free).

    inputs, backgrounds (Tensor[N, C, H, W]), masks (Tensor[N, H, W] bool) -> Tensor[N, C, H, W]
    """
    return torch.where(masks[:, None], inputs, backgrounds)


def background_only(inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return remove_object(inputs, masks)


def object_only(inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return inputs * masks[:, None].to(inputs.dtype)


@dataclass(frozen=True)
class DonorPool:
    """Object-free backgrounds from a spread of dataset images, with their labels."""

    backgrounds: torch.Tensor  # Tensor[P, C, H, W]
    labels: torch.Tensor  # Tensor[P]

    def pick(self, labels: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each sample, a donor of another class, chosen by the sample's ``key`` (its
        dataset index), so the choice does not depend on the batch. Returns (backgrounds,
        donor labels); a donor label of -1 means no donor of another class exists."""
        chosen = torch.full_like(labels, -1)
        for j, (label, key) in enumerate(zip(labels.tolist(), keys.tolist())):
            options = (self.labels != label).nonzero().flatten()
            if len(options):
                chosen[j] = options[(key * 2654435761) % len(options)]
        safe = chosen.clamp_min(0).to(self.backgrounds.device)
        donor_labels = torch.where(chosen >= 0, self.labels[chosen.clamp_min(0)], -1)
        return self.backgrounds[safe], donor_labels


@dataclass(frozen=True)
class Behaviour:
    """Predictions under each intervention, per sample (Tensor[N] of class indices)."""

    swapped: torch.Tensor
    donor_labels: torch.Tensor
    background_only: torch.Tensor
    object_only: torch.Tensor


@torch.no_grad()
def behaviour(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    masks: torch.Tensor,
    targets: torch.Tensor,
    keys: torch.Tensor,
    pool: DonorPool,
) -> Behaviour:
    """Predict on all three interventions of a batch in one forward pass."""
    backgrounds, donor_labels = pool.pick(targets.cpu(), keys.cpu())
    batch = torch.cat([
        swap_background(inputs, masks, backgrounds.to(inputs.device)),
        background_only(inputs, masks),
        object_only(inputs, masks),
    ])  # fmt: skip
    predictions = model(batch).argmax(1).view(3, -1)
    swapped = torch.where(donor_labels.to(inputs.device) >= 0, predictions[0], -1)
    return Behaviour(swapped, donor_labels.to(inputs.device), predictions[1], predictions[2])
