"""The mean-background hijack test of a finished stream (:mod:`auditor.detect.overlay`): each
class's mean background, from a bounded, evenly spread sample of the dataset (before any
object is filled in), drawn over the sample's other images, and the model's answers; for
each class whose test meets the bar, the pictures a reviewer needs to see what was drawn."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from auditor.attribution.precision import autocast
from auditor.config import AuditConfig, DetectConfig
from auditor.data.transforms import AuditTransform
from auditor.detect.hijack import HijackTest
from auditor.detect.interventions import dilate, margin
from auditor.detect.overlay import mean_backgrounds, overlay_plan, overlay_tests, overlays
from auditor.runner.exemplars import thumbnail
from auditor.runner.preflight import Probe

OVERLAYS_PER_IMAGE = 16  # the cost bound: forward passes per sampled image, beyond its own
MIN_CELL = 5  # images a class's test needs on each side


@dataclass(frozen=True)
class Overlaid:
    """The mean-background hijack tests, and for each class whose test meets the bar before
    the adjustment across classes (a superset of those found), its pictures
    (:func:`pictures`), by class index."""

    tests: list[HijackTest] = field(default_factory=list)
    pictures: dict[int, dict[str, Any]] = field(default_factory=dict)


@torch.no_grad()
def overlay_hijacks(
    net: torch.nn.Module,
    sample: Callable[[], Probe | None],
    k: int,
    neutral: Collection[int],
    config: AuditConfig,
    transform: AuditTransform,
    answered: Mapping[int, bool],
) -> Overlaid:
    """The mean-background hijack test of every class with enough images (:func:`overlay_tests`)
    on the images ``sample()`` loads (only when ``overlay_images`` is on): each image
    carries the overlays of up to :data:`OVERLAYS_PER_IMAGE` other classes. With so many
    classes that a class's overlay would fall on fewer than :data:`MIN_CELL` images on
    average, no model call is made: no class could be tested. ``answered``: whether the
    stream's answer was right, by dataset position (an image it lacks counts as wrong);
    ``transform`` turns the pictures back into colours."""
    if config.overlay_images == 0 or k < 2:
        return Overlaid()
    probe = sample()
    if probe is None or len(probe.labels) * min(k - 1, OVERLAYS_PER_IMAGE) < MIN_CELL * k:
        return Overlaid()
    inputs, labels = probe.inputs, probe.labels.to(probe.inputs.device)
    masks = probe.masks.reshape(len(inputs), *inputs.shape[-2:]).bool()
    regions = dilate(masks, margin(masks))  # nothing is filled in: the object itself is enough
    present = sorted({int(c) for c in labels.tolist()})
    means = mean_backgrounds(inputs, regions, labels, k)
    drawn = overlays(means, present, neutral)
    plan = overlay_plan(probe.labels, k, OVERLAYS_PER_IMAGE, seed=config.detect.seed)
    answer = _answers(net, config)
    right = torch.tensor([bool(answered.get(int(p), False)) for p in probe.positions])
    answers = torch.stack(  # k >= 2: every image carries at least one overlay
        [answer(inputs + drawn[plan[:, j].to(inputs.device)]).cpu() for j in range(plan.shape[1])],
        dim=1,
    )
    tests = overlay_tests(
        answers, plan, probe.labels, right, k, neutral, config.detect, min_cell=MIN_CELL
    )
    shown = [t.donor for t in tests if meets_bar(t, config.detect)]
    return Overlaid(tests, pictures(shown, probe, means, drawn, answers, plan, right, transform))


def meets_bar(test: HijackTest, config: DetectConfig) -> bool:
    """The bar a hijack test must meet to be found, on its unadjusted p."""
    return test.p < config.q and test.ci[0] > config.min_gap


def pictures(
    classes: list[int],
    probe: Probe,
    means: torch.Tensor,
    drawn: torch.Tensor,
    answers: torch.Tensor,
    plan: torch.Tensor,
    right: torch.Tensor,
    transform: AuditTransform,
) -> dict[int, dict[str, Any]]:
    """Per class ``c``: its mean background (``mean_background``, uint8 Tensor[3, t, t]; a
    pixel every object covered shows the normalisation's mean colour) and the first sampled
    image (in dataset order) of another class, answered right, that ``c``'s overlay made the
    model call ``c``, with the overlay drawn (``drawn_over``; its ``drawn_over_label`` and
    ``drawn_over_position`` in the dataset), when there is one."""
    out: dict[int, dict[str, Any]] = {}
    for c in classes:
        shown: dict[str, Any] = {"mean_background": _colours(means[c], transform)}
        moved = ((plan == c) & (answers == c)).any(1) & right & (probe.labels != c)
        if moved.any():
            i = int(probe.positions.masked_fill(~moved, torch.iinfo(torch.long).max).argmin())
            shown |= {
                "drawn_over": _colours(probe.inputs[i] + drawn[c], transform),
                "drawn_over_label": int(probe.labels[i]),
                "drawn_over_position": int(probe.positions[i]),
            }
        out[c] = shown
    return out


def _colours(image: torch.Tensor, transform: AuditTransform) -> torch.Tensor:
    """A normalised Tensor[3, H, W] -> its uint8 thumbnail Tensor[3, t, t]."""
    return thumbnail(transform.denormalize(image.float())[None])[0]


def _answers(net: torch.nn.Module, config: AuditConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's top class for a stack of images, in batches of ``batch_size``."""

    def answer(inputs: torch.Tensor) -> torch.Tensor:
        with autocast(inputs.device, config.precision):
            return torch.cat([net(part).argmax(1) for part in inputs.split(config.batch_size)])

    return answer
