"""Judging the streamed rows: the class rule on every class (with its off-object hotspots),
every class x group cell and every subgroup; what the model draws for the flagged classes;
and the checks that an audit scored something."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from auditor.attribution.class_model import ClassModelOptions, class_model_images, displayable
from auditor.config import AuditConfig
from auditor.data.attributes import group_value
from auditor.data.read import DatasetInfo
from auditor.detect.findings import ClassResult
from auditor.detect.groups import GroupResult, group_column, group_results
from auditor.detect.hijack import HijackTest
from auditor.detect.hotspot import Hotspot
from auditor.detect.rule import class_results, neutral_classes, with_hotspots
from auditor.detect.subgroups import Subgroup, class_subgroups
from auditor.errors import DataError
from auditor.runner.exemplars import ClassEvidence, thumbnail
from auditor.runner.summary import scored_images


def judged(
    samples: pd.DataFrame,
    evidence: dict[int, ClassEvidence],
    info: DatasetInfo,
    config: AuditConfig,
    untrusted: dict[str, str],
    spots: dict[int, dict[str, Hotspot]] | None = None,
    overlays: Sequence[HijackTest] = (),
) -> tuple[list[ClassResult], list[GroupResult], list[Subgroup]]:
    """The rule on every class (with its off-object hotspots ``spots`` as attribution
    evidence and its mean-background hijack test from ``overlays``), on every class x group cell
    of ``group_by``, and on every subgroup of a class's maps."""
    names, methods, detect = info.class_names, config.methods, config.detect
    results = class_results(samples, names, methods, detect, untrusted=untrusted, overlays=overlays)
    driving = [m for m in methods if m not in untrusted]
    results = [with_hotspots(r, (spots or {}).get(r.index, {}), driving, detect) for r in results]
    # a group or subgroup is judged with the donors chosen on all the data: its own few
    # images cannot tell which backgrounds carry another class's cue into a swap
    donors = neutral_classes(samples, len(names), detect) or None
    groups = [
        group_results(samples, names, methods, detect, g, untrusted=untrusted, donors=donors)
        for g in config.group_by
    ]
    found = [
        subgroup
        for c, kept in evidence.items()
        for subgroup in class_subgroups(
            samples, kept.small, c, names, methods, detect, untrusted=untrusted, donors=donors
        )
    ]
    return results, groups, found


def class_models(
    net: torch.nn.Module,
    results: list[ClassResult],
    config: AuditConfig,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """What the model draws for each flagged class (Simonyan et al. 2014), as
    uint8 thumbnails Tensor[3, t, t] by class name."""
    chosen = [r for r in results if r.status == "flag"]  # each costs `steps` passes
    if not chosen or config.class_model_steps == 0:
        return {}
    options = ClassModelOptions(
        steps=config.class_model_steps, jitter=config.class_model_jitter,
        blur=config.class_model_blur, seed=config.detect.seed,
    )  # fmt: skip
    images = class_model_images(net, [r.index for r in chosen], image_size=config.image_size,
                                options=options, device=device)  # fmt: skip
    return {r.name: image for r, image in zip(chosen, thumbnail(displayable(images)))}


def with_class_models(evidence: dict[str, Any], drawn: dict[str, torch.Tensor]) -> dict[str, Any]:
    for name, image in drawn.items():
        evidence["classes"][name]["class_model"] = image
    return evidence


def with_mean_backgrounds(
    evidence: dict[str, Any],
    results: Sequence[ClassResult],
    pictures: dict[int, dict[str, Any]],
    info: DatasetInfo,
) -> dict[str, Any]:
    """The mean-background pictures (:func:`auditor.runner.overlays.pictures`: its test met
    the bar) of each class with a hijack finding, whichever view's it is, as
    ``mean_background`` in its evidence, the drawn-over image's file and id beside it."""
    for r in results:
        if r.index not in pictures or not any(f.kind == "hijack" for f in r.findings):
            continue
        shown = dict(pictures[r.index])
        if "drawn_over_position" in shown:
            record = info.records[shown.pop("drawn_over_position")]
            shown |= {"drawn_over_file": str(record.path), "drawn_over_id": record.image_id}
        evidence["classes"].setdefault(r.name, {})["mean_background"] = shown
    return evidence


def with_groups(
    samples: pd.DataFrame, info: DatasetInfo, group_by: tuple[str, ...]
) -> pd.DataFrame:
    """One column ``group.NAME`` per grouped attribute: each row's image's value, or
    ``missing``."""
    columns = {
        group_column(name): [group_value(info.records[i], name) for i in samples["sample"]]
        for name in group_by
    }
    return samples.assign(**columns) if columns else samples


def check_scored(samples: pd.DataFrame, info: DatasetInfo) -> None:
    """An audit that scored no image is an error, never a verdict: every image skipped, or
    none with a finite score from any method."""
    if scored_images(samples):
        return
    if samples["skip_reason"].isna().any():
        raise DataError(
            f"{info.source}: no image could be scored; the model answered "
            f"{samples.loc[samples['skip_reason'].isna(), 'sample'].nunique()} image(s), but "
            "every map of every method was zero on them (is the target layer dead?)."
        )
    reasons = samples["skip_reason"].value_counts()
    reason, count = str(reasons.index[0]), int(reasons.iloc[0])
    example = samples[samples["skip_reason"] == reason].iloc[0]
    hint = " (is --images the folder that holds them?)" if reason == "missing_file" else ""
    raise DataError(
        f"{info.source}: no image could be audited; all {len(samples)} were skipped, most often "
        f"{reason} ({count}), e.g. {example['file_name']}: {example['skip_detail']}{hint}"
    )
