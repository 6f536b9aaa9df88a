"""Off-object hotspots of a finished stream (:mod:`auditor.detect.hotspot`), with the one
control that needs the model. A class's maps can draw to a fixed place whatever the image
shows (a border the network's zero padding marks, a place its map for that class favours):
a consistent place, but no cue in the class's images. So, for each class and method with a
hotspot, the maps of that class as *target* are computed on the probe images of the other
classes, which lack its content, and the class's own images must draw more to the place
than those do."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from auditor.attribution.engine import compute_many
from auditor.config import AuditConfig
from auditor.detect.hotspot import (
    GRID,
    Hotspot,
    class_hotspots,
    excluded_cells,
    off_object_maps,
)
from auditor.detect.maps import MapSample
from auditor.detect.rule import has_hotspot
from auditor.models import TargetLayer
from auditor.runner.preflight import Probe


def controlled_hotspots(
    net: torch.nn.Module,
    probe: Callable[[], Probe | None],
    layer: TargetLayer | None,
    config: AuditConfig,
    kept: Mapping[int, Mapping[str, MapSample]],
) -> dict[int, dict[str, Hotspot]]:
    """Per class and method, the hotspot test (:func:`class_hotspots`) of the off-object map
    samples ``kept``; those that show a hotspot are tested again with their class's maps on
    the other classes' probe images as the control (``probe()`` loads them, only then;
    without a probe: no control, no hotspot)."""
    first = class_hotspots(kept, config.methods, config.detect, size=config.image_size)
    candidates = {
        c: [m for m, h in spots.items() if has_hotspot(h, config.detect)]
        for c, spots in first.items()
    }
    candidates = {c: methods for c, methods in candidates.items() if methods}
    if not candidates:
        return first
    priors = prior_maps(net, probe(), layer, config, candidates)
    return class_hotspots(
        kept, config.methods, config.detect, size=config.image_size, priors=priors
    )


def prior_maps(
    net: torch.nn.Module,
    probe: Probe | None,
    layer: TargetLayer | None,
    config: AuditConfig,
    candidates: Mapping[int, list[str]],
) -> dict[int, dict[str, torch.Tensor]]:
    """Per candidate class c and its methods: the off-object small maps (Tensor[P_c, GRID *
    GRID]) of target c on the probe images labelled otherwise, from one forward pass shared
    by every candidate; empty maps (so p = 1) without a probe."""
    empty = torch.zeros(0, GRID * GRID)
    if probe is None:
        return {c: dict.fromkeys(methods, empty) for c, methods in candidates.items()}
    n = probe.labels.shape[0]
    device = probe.inputs.device
    targets = {str(c): torch.full((n,), c, device=device) for c in candidates}
    methods = tuple(dict.fromkeys(m for ms in candidates.values() for m in ms))
    maps = compute_many(
        net, probe.inputs, targets, methods=methods,
        target_layer=layer, precision=config.precision,
    )  # fmt: skip
    cells = excluded_cells(probe.masks)
    out = {}
    for c, chosen in candidates.items():
        other = (probe.labels != c).to(device)
        out[c] = {m: off_object_maps(maps[str(c)].maps[m][other], cells[other]) for m in chosen}
    return out
