"""Interventions on the image, built from its object mask (pure tensor functions).

- background swapped (Mixed-Rand of the ImageNet-9 Backgrounds Challenge, Xiao et al. 2021):
  the object pasted onto the background of an image of another class, whose own object has
  been removed first;
- same-class background (Mixed-Same): the object pasted onto the background of another
  image of its own class;
- background only: the object removed.

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


@dataclass(frozen=True)
class Behaviour:
    """Predictions under each intervention, per sample (Tensor[N] of class indices; -1 where
    no donor exists or the model's logits were not finite; a swap without a prediction also
    has donor label -1), the probability of the labelled class under each (Tensor[3, N]:
    swapped, background only, same-class background), and the background-swapped images
    themselves (Tensor[N, C, H, W]), so that the predictions the swap changed can be
    explained on the images that changed them.
    """

    swapped: torch.Tensor
    donor_labels: torch.Tensor
    background_only: torch.Tensor
    same_class: torch.Tensor
    label_probability: torch.Tensor
    swapped_inputs: torch.Tensor

    def broken(self, targets: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """Samples predicted right whose background swap made the prediction wrong: the
        ones the swap gap counts (Tensor[N] bool)."""
        return (predictions == targets) & (self.swapped >= 0) & (self.swapped != targets)


@torch.no_grad()
def behaviour(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    masks: torch.Tensor,
    targets: torch.Tensor,
    keys: torch.Tensor,
    pool: DonorPool,
) -> Behaviour:
    """Predictions on the three interventions of a batch."""
    labels, positions = targets.cpu(), keys.cpu()
    backgrounds, donor_labels = pool.pick(labels, positions)
    same_backgrounds, same_labels = pool.pick(labels, positions, same_class=True)
    swapped_inputs = swap_background(inputs, masks, backgrounds.to(inputs.device))
    views = (
        swapped_inputs,
        background_only(inputs, masks),
        swap_background(inputs, masks, same_backgrounds.to(inputs.device)),
    )
    # one forward per view at the caller's batch size: a tripled batch costs more per image
    # on the CPU (resnet50, 224 px: 16.9 s for 96 images against 3 x 4.7 s for 32)
    logits = torch.stack([model(view).float() for view in views])
    predictions = logits.argmax(2)
    label_probability = logits.softmax(2).gather(2, targets.view(1, -1, 1).expand(3, -1, 1))[..., 0]
    has_donor = torch.stack([donor_labels >= 0, torch.ones_like(labels, dtype=torch.bool),
                             same_labels >= 0]).to(inputs.device)  # fmt: skip
    # a view whose logits are not finite has no prediction: it counts as not intervened
    answered = has_donor & logits.isfinite().all(2)
    predictions = torch.where(answered, predictions, -1)
    label_probability = torch.where(answered, label_probability, torch.nan)
    donor_labels = torch.where(answered[0].cpu(), donor_labels, -1)
    return Behaviour(
        predictions[0], donor_labels.to(inputs.device), predictions[1], predictions[2],
        label_probability, swapped_inputs,
    )  # fmt: skip
