"""Class-model visualisation (Simonyan et al. 2014, §2): the image that maximises a class's
score, found by gradient ascent on the input.

    argmax_I  S_c(I) - l2 * ||I||^2

from the zero image (the dataset mean, once normalised), all classes at once in one batch.
Two regularisers that later work added, each off when its setting is 0:

- ``jitter``: before each step the images are rolled by up to ``jitter`` pixels in x and y
  (seeded), so that no single pixel pattern can carry the score;
- ``blur``: every ``blur_every`` steps the images are smoothed by a Gaussian of standard
  deviation ``blur`` pixels, which suppresses high-frequency noise.

A model that learned the background draws texture, not the shape. Parameters never receive
``.grad`` (``torch.autograd.grad``), and every module's train/eval mode is restored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from auditor.errors import AttributionError


@dataclass(frozen=True)
class ClassModelOptions:
    """steps of ascent with step size ``lr``; the L2 weight; the two regularisers."""

    steps: int = 100
    lr: float = 0.1
    l2: float = 1e-3
    jitter: int = 2
    blur: float = 0.5
    blur_every: int = 10
    seed: int = 0


def class_model_images(
    model: nn.Module,
    classes: Sequence[int],
    *,
    image_size: int,
    options: ClassModelOptions = ClassModelOptions(),
    device: torch.device | None = None,
) -> torch.Tensor:
    """The images (Tensor[K, 3, S, S], in the model's input space) that maximise each of
    ``classes``' scores."""
    if options.steps < 1 or not classes:
        raise AttributionError("Expected at least one step and one class.")
    device = device or next(model.parameters()).device
    images = torch.zeros(len(classes), 3, image_size, image_size, device=device)
    targets = torch.tensor(list(classes), device=device)
    generator = torch.Generator().manual_seed(options.seed)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        for step in range(options.steps):
            images = _ascend(model, images, targets, options, generator)
            if options.blur > 0 and options.blur_every and (step + 1) % options.blur_every == 0:
                images = TF.gaussian_blur(images, _kernel(options.blur), [options.blur])
    finally:
        for module, training in modes:
            module.training = training
    return images.detach()


def _ascend(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    options: ClassModelOptions,
    generator: torch.Generator,
) -> torch.Tensor:
    """One gradient step on the regularised class scores, through a random roll."""
    dx, dy = (int(v) for v in torch.randint(-options.jitter, options.jitter + 1, (2,),
                                             generator=generator))  # fmt: skip
    leaf = images.detach().roll((dy, dx), dims=(2, 3)).requires_grad_(True)
    with torch.enable_grad():
        scores = model(leaf).gather(1, targets[:, None]).sum()
        objective = scores - options.l2 * leaf.pow(2).sum()
        (gradient,) = torch.autograd.grad(objective, leaf)
    stepped = leaf.detach() + options.lr * gradient / gradient.abs().mean().clamp_min(1e-12)
    return stepped.roll((-dy, -dx), dims=(2, 3))


def _kernel(sigma: float) -> list[int]:
    side = 2 * max(1, round(2 * sigma)) + 1
    return [side, side]


def displayable(images: torch.Tensor) -> torch.Tensor:
    """Tensor[K, 3, S, S] -> [0, 1] per image, its 1st to 99th percentile stretched (for
    display only: the ascent's images have no natural colour range)."""
    flat = images.flatten(1)
    low = flat.quantile(0.01, dim=1)[:, None, None, None]
    high = flat.quantile(0.99, dim=1)[:, None, None, None]
    return ((images - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
