"""Interventions on the image, built from its object mask (pure tensor functions).

- background swapped (Mixed-Rand of the ImageNet-9 Backgrounds Challenge, Xiao et al. 2021):
  the object pasted onto the background of an image of another class, whose own object has
  been removed first;
- same-class background (Mixed-Same): the object pasted onto the background of another
  image of its own class;
- background only: the object removed;
- blurred background: the object on a blurred copy of its own object-free background.

Which view feeds which statistic, and what counts as evidence, is the registry's
(:mod:`auditor.detect.views`).

Removing an object must not leave its shape behind. Filling exactly the mask with a blur
leaves a smooth patch in the object's outline inside a textured background, which a model
reads as the object (found on a two-class planted-shortcut scenario, where it made an
independent background look like a cue). So, as in the ImageNet-9 Backgrounds Challenge,
the removed region is the object's bounding box (after dilating the mask by 3% of the image
side, since annotations and objects disagree by a pixel at the edge), filled with the
image's own background texture copied from the nearest offsets outside the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
    k = 2 * radius + 1  # a square is a row of a column: two 1-D passes, not k * k per pixel
    x = masks[:, None].float()
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    return F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))[:, 0] > 0


def margin(masks: torch.Tensor) -> int:
    """The dilation used before filling an object region: 3% of the image side, at least 1."""
    return max(1, round(0.03 * min(masks.shape[-2:])))


def bounding_boxes(masks: torch.Tensor, grow: int = 0) -> torch.Tensor:
    """Each mask's bounding box, grown by ``grow`` pixels on every side within the image, as
    a bool mask (an empty mask gives an empty box). Growing the box equals taking the box of
    the mask dilated by ``grow`` (a square structuring element), at the cost of 1-D spans.

    masks (Tensor[N, H, W] bool) -> Tensor[N, H, W] bool
    """
    rows, cols = _span(masks.any(2)), _span(masks.any(1))
    if grow > 0:
        rows, cols = _dilate_1d(rows, grow), _dilate_1d(cols, grow)
    return rows[:, :, None] & cols[:, None, :]


def _dilate_1d(flags: torch.Tensor, radius: int) -> torch.Tensor:
    """Tensor[N, L] bool grown by ``radius`` on both sides."""
    grown = F.max_pool1d(flags[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return grown[:, 0] > 0


def _span(flags: torch.Tensor) -> torch.Tensor:
    """Fill each row of ``flags`` (Tensor[N, L] bool) between its first and last True."""
    seen_before = flags.cumsum(1) > 0
    seen_after = flags.flip(1).cumsum(1).flip(1) > 0
    return seen_before & seen_after


def texture_fill(inputs: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Fill ``region`` with pixels of the same image copied from outside it, from the nearest
    offset that lands outside (a patchwork of the surrounding texture); pixels no offset
    reaches get the local mean of :func:`fill_region`.

    Each pixel's offset is found on the masks alone (bool shifts), then every filled pixel
    is read in one gather: no per-offset copy of the images, one host check per ring.

    inputs (Tensor[N, C, H, W]), region (Tensor[N, H, W] bool) -> Tensor[N, C, H, W]
    """
    n, c, h, w = inputs.shape
    offsets = _offsets(h, w)
    first = torch.full(region.shape, -1, dtype=torch.int16, device=region.device)
    todo, outside = region.clone(), ~region
    for k, offset in enumerate(offsets):
        take = todo & torch.roll(outside, offset, dims=(1, 2))  # its source lies outside
        first.masked_fill_(take, k)
        todo &= ~take
        if k % _RING == _RING - 1 and not todo.any():  # one host check per ring of offsets
            break
    shift = torch.tensor(offsets, device=region.device)[first.clamp_min(0).long()]  # [N, H, W, 2]
    rows = (torch.arange(h, device=region.device)[:, None] - shift[..., 0]) % h
    cols = (torch.arange(w, device=region.device)[None, :] - shift[..., 1]) % w
    source = (rows * w + cols).flatten(1)[:, None].expand(n, c, h * w)
    copied = inputs.flatten(2).gather(2, source).view_as(inputs)
    out = torch.where((first >= 0)[:, None], copied, inputs)
    return fill_region(out, todo) if todo.any() else out


_RING = 8  # offsets tried per step of texture_fill


def _offsets(height: int, width: int) -> list[tuple[int, int]]:
    """Shifts in 8 directions at growing distances (steps of 1/16 of the side), nearest first."""
    step_y, step_x = max(1, height // 16), max(1, width // 16)
    shifts = {
        (k * sy * step_y, k * sx * step_x)
        for k in range(1, 16)
        for sy in (-1, 0, 1)
        for sx in (-1, 0, 1)
        if (sy, sx) != (0, 0)
    }
    return sorted(shifts, key=lambda s: (s[0] ** 2 + s[1] ** 2, s))


def remove_object(inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The object's (dilated) bounding box, filled with the surrounding background texture."""
    return texture_fill(inputs, bounding_boxes(masks, grow=margin(masks)))


def swap_background(
    inputs: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor
) -> torch.Tensor:
    """The objects of ``inputs`` pasted onto ``backgrounds`` (already object-free).

    inputs, backgrounds (Tensor[N, C, H, W]), masks (Tensor[N, H, W] bool) -> Tensor[N, C, H, W]
    """
    return torch.where(masks[:, None], inputs, backgrounds)


def background_only(inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return remove_object(inputs, masks)


def blur_background(inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The object on a blurred copy of its own background: the object removed
    (:func:`remove_object`), the result blurred by a Gaussian of sigma 4% of the image side
    (fine texture, marks and text are gone; layout and colour stay), the object pasted back
    in place. A model that needs its background's detail loses the class; one that reads the
    object does not.

    inputs (Tensor[N, C, H, W]), masks (Tensor[N, H, W] bool) -> Tensor[N, C, H, W]
    """
    return swap_background(inputs, masks, gaussian_blur(remove_object(inputs, masks), 0.04))


def flat_background(inputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The object on a flat fill of its own background's mean colour (per image and channel;
    the whole image's mean when the object covers it): texture, layout and marks are gone,
    only the background's average colour stays.

    inputs (Tensor[N, C, H, W]), masks (Tensor[N, H, W] bool) -> Tensor[N, C, H, W]
    """
    outside = (~masks)[:, None].to(inputs.dtype)
    count = outside.sum((2, 3), keepdim=True)
    mean = (inputs * outside).sum((2, 3), keepdim=True) / count.clamp_min(1)
    mean = torch.where(count > 0, mean, inputs.mean((2, 3), keepdim=True))
    return swap_background(inputs, masks, mean.expand_as(inputs))


def gaussian_blur(inputs: torch.Tensor, fraction: float) -> torch.Tensor:
    """A separable Gaussian blur of sigma ``fraction`` of the shorter image side (at least
    half a pixel), with reflected edges.

    inputs (Tensor[N, C, H, W]) -> Tensor[N, C, H, W]
    """
    sigma = max(0.5, fraction * min(inputs.shape[-2:]))
    radius = min(int(3 * sigma + 0.5), min(inputs.shape[-2:]) - 1)
    steps = torch.arange(-radius, radius + 1, device=inputs.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (steps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(inputs.dtype)
    c = inputs.shape[1]
    x = F.pad(inputs, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


@dataclass(frozen=True)
class DonorPool:
    """Object-free backgrounds from a spread of dataset images, with their labels and their
    dataset positions (so that no image is its own donor)."""

    backgrounds: torch.Tensor  # Tensor[P, C, H, W]
    labels: torch.Tensor  # Tensor[P]
    positions: torch.Tensor | None = None  # Tensor[P]; None: no donor is an audited image

    def pick(
        self, labels: torch.Tensor, keys: torch.Tensor, *, same_class: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For each sample, a donor of another class (``same_class``: another image of its
        own class), chosen by the sample's ``key`` (its dataset position), so the choice does
        not depend on the batch. Returns (backgrounds, donor labels) on the pool's devices;
        a donor label of -1 means no such donor exists.

        labels, keys (Tensor[N] on the CPU) -> (Tensor[N, C, H, W], Tensor[N])
        """
        same = self.labels[None, :] == labels[:, None]  # Tensor[N, P]
        allowed = same if same_class else ~same
        if same_class and self.positions is not None:
            allowed &= self.positions[None, :] != keys[:, None]
        count = allowed.sum(1)
        # the (key * golden-ratio hash mod count)-th allowed donor, in pool order
        rank = (keys * 2654435761) % count.clamp_min(1)
        chosen = (allowed & (allowed.cumsum(1) == rank[:, None] + 1)).int().argmax(1)
        chosen = torch.where(count > 0, chosen, -1)
        donor_labels = torch.where(chosen >= 0, self.labels[chosen.clamp_min(0)], -1)
        return self.backgrounds[chosen.clamp_min(0).to(self.backgrounds.device)], donor_labels
