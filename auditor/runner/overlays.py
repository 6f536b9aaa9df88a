"""The mean-background hijack test of a finished stream (:mod:`auditor.detect.overlay`): each
class's mean background, from a bounded, evenly spread sample of the dataset (before any
object is filled in), drawn over the sample's other images, and the model's answers."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from auditor.attribution.precision import autocast
from auditor.config import AuditConfig
from auditor.detect.hijack import HijackTest
from auditor.detect.interventions import dilate, margin
from auditor.detect.overlay import mean_backgrounds, overlay_plan, overlay_tests, overlays
from auditor.runner.preflight import Probe

OVERLAYS_PER_IMAGE = 16  # the cost bound: forward passes per sampled image, beyond its own
MIN_CELL = 5  # images a class's test needs on each side


@torch.no_grad()
def overlay_hijacks(
    net: torch.nn.Module,
    sample: Callable[[], Probe | None],
    k: int,
    neutral: Collection[int],
    config: AuditConfig,
) -> list[HijackTest]:
    """The mean-background hijack test of every class with enough images (:func:`overlay_tests`)
    on the images ``sample()`` loads (only when ``overlay_images`` is on): each image
    carries the overlays of up to :data:`OVERLAYS_PER_IMAGE` other classes. With so many
    classes that a class's overlay would fall on fewer than :data:`MIN_CELL` images on
    average, no model call is made: no class could be tested."""
    if config.overlay_images == 0 or k < 2:
        return []
    probe = sample()
    if probe is None or len(probe.labels) * min(k - 1, OVERLAYS_PER_IMAGE) < MIN_CELL * k:
        return []
    inputs, labels = probe.inputs, probe.labels.to(probe.inputs.device)
    masks = probe.masks.reshape(len(inputs), *inputs.shape[-2:]).bool()
    regions = dilate(masks, margin(masks))  # nothing is filled in: the object itself is enough
    present = sorted({int(c) for c in labels.tolist()})
    drawn = overlays(mean_backgrounds(inputs, regions, labels, k), present, neutral)
    plan = overlay_plan(probe.labels, k, OVERLAYS_PER_IMAGE, seed=config.detect.seed)
    answer = _answers(net, config)
    right = (answer(inputs) == labels).cpu()
    answers = torch.stack(  # k >= 2: every image carries at least one overlay
        [answer(inputs + drawn[plan[:, j].to(inputs.device)]).cpu() for j in range(plan.shape[1])],
        dim=1,
    )
    return overlay_tests(
        answers, plan, probe.labels, right, k, neutral, config.detect, min_cell=MIN_CELL
    )


def _answers(net: torch.nn.Module, config: AuditConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's top class for a stack of images, in batches of ``batch_size``."""

    def answer(inputs: torch.Tensor) -> torch.Tensor:
        with autocast(inputs.device, config.precision):
            return torch.cat([net(part).argmax(1) for part in inputs.split(config.batch_size)])

    return answer
