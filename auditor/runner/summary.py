"""``summary.json``: the verdict, the per-class results with their findings in words, and,
with ``--group-by`` and subgroups, the groups' and subgroups' results. A flagged class x
group cell or subgroup makes the verdict ``fail`` like a flagged class: a class can rely on a
cue inside one group while the class as a whole passes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from auditor._version import __version__
from auditor.config import AuditConfig
from auditor.data.read import DatasetInfo
from auditor.detect.findings import ClassResult
from auditor.detect.groups import GroupResult
from auditor.detect.rule import verdict
from auditor.detect.stats_util import finite
from auditor.detect.subgroups import Subgroup
from auditor.errors import DataError
from auditor.models import LoadedModel
from auditor.record import Summary


def summary(
    loaded: LoadedModel,
    info: DatasetInfo,
    data: str | Path,
    data_sha: str | None,
    config: AuditConfig,
    results: list[ClassResult],
    samples: pd.DataFrame,
) -> dict[str, Any]:
    skipped = samples[samples["skip_reason"].notna()]
    n_skipped = int(skipped["sample"].nunique())
    n_scored = scored_images(samples)
    fraction = n_skipped / len(info.records)
    return {
        "schema_version": 1,
        "auditor_version": __version__,
        "verdict": verdict(results),
        "flagged_classes": [r.name for r in results if r.flagged],
        "noted_classes": [r.name for r in results if r.notes],
        "model": {"spec": loaded.spec, "sha256": loaded.sha256},
        "dataset": {
            "spec": str(data),
            "sha256": data_sha,
            "n_images": len(info.records),
            "n_scored": n_scored,
            "n_skipped": n_skipped,
            "n_unscored": len(info.records) - n_skipped - n_scored,
            "skipped_by_reason": {
                str(k): int(v)
                for k, v in skipped.drop_duplicates("sample")["skip_reason"].value_counts().items()
            },
            "skipped_fraction": round(fraction, 4),
            "max_skipped": config.max_skipped,
            "skip_limit_exceeded": fraction > config.max_skipped,
            "shared_files": shared_files(samples),
        },
        "methods": list(config.methods),
        "primary_method": config.primary,
        "classes": [class_entry(r, info.class_names) for r in results],
        "background_challenge": challenge_summary(results, info.class_names),
    }


def scored_images(samples: pd.DataFrame) -> int:
    """Images with a finite score from at least one method: audited, not just read (an
    image whose every map is zero has a prediction but no score)."""
    rows = samples[samples["skip_reason"].isna() & samples["chance_corrected"].notna()]
    return int(rows["sample"].nunique())


def shared_files(samples: pd.DataFrame, *, examples: int = 5) -> dict[str, Any]:
    """Files listed under more than one image id: each id is audited, so such an image
    counts more than once. ``n``: how many files; ``examples``: a few, with their ids."""
    ids = samples.drop_duplicates(["file_name", "image_id"]).groupby("file_name")["image_id"]
    counts = ids.nunique()
    shared = counts[counts > 1]
    return {
        "n": len(shared),
        "examples": [
            {"file_name": str(name), "image_ids": [str(i) for i in ids.get_group(name)]}
            for name in shared.index[:examples]
        ],
    }


def challenge_summary(results: list[ClassResult], names: list[str]) -> dict[str, Any] | None:
    """The ImageNet-9 Backgrounds Challenge quantities over all classes (accuracy over the
    images, so larger classes weigh more), and the class x background-class table:
    ``accuracy[i][j]`` is the accuracy of class i's objects on class j's backgrounds (the
    diagonal is Mixed-Same; None where no image of i got a background of j)."""
    challenges = [r.challenge for r in results]
    if all(c is None for c in challenges):
        return None
    same = [c.mixed_same for c in challenges if c is not None]
    rand = [c.mixed_rand for c in challenges if c is not None]

    def pooled(cells: list[Any]) -> float | None:
        n = sum(c.n for c in cells)
        return sum(c.correct for c in cells) / n if n else None

    mixed_same, mixed_rand = pooled(same), pooled(rand)
    table = [
        [c.cells[j] if c is not None and j in c.cells else None for j in range(len(names))]
        for c in challenges
    ]
    return {
        "mixed_same_accuracy": mixed_same,
        "mixed_rand_accuracy": mixed_rand,
        "bg_gap": None if mixed_same is None or mixed_rand is None else mixed_same - mixed_rand,
        "classes": list(names),
        "accuracy": [[finite(c.accuracy) if c else None for c in row] for row in table],
        "n": [[c.n if c else 0 for c in row] for row in table],
    }


def group_summary(
    groups: list[GroupResult],
    found: list[Subgroup],
    results: list[ClassResult],
    info: DatasetInfo,
    config: AuditConfig,
) -> dict[str, Any]:
    """``groups`` per attribute, ``subgroups`` per class, and the verdict over all of them."""
    names = info.class_names
    entries = [group.to_dict(config.primary) for group in groups]
    cells = [r for g in groups for _, r in g.cells]
    return {
        "verdict": verdict(results, [*cells, *(s.result for s in found)]),
        "flagged_groups": [name for g in groups for name in g.flagged()],
        "flagged_subgroups": [_subgroup_name(s, names) for s in found if s.result.flagged],
        **({"groups": entries} if groups else {}),
    }


def with_subgroups(
    summary: dict[str, Any], found: list[Subgroup], info: DatasetInfo, config: AuditConfig
) -> dict[str, Any]:
    """Each class entry gains ``subgroups``: those of its maps' clusters (none when its maps
    form one group)."""
    for entry in summary["classes"]:
        entry["subgroups"] = [
            _subgroup_entry(s, info, config) for s in found if s.label == entry["index"]
        ]
    return summary


def class_entry(result: ClassResult, names: list[str]) -> dict[str, Any]:
    """A class in ``summary.json``: its findings as values (:func:`with_reasons` adds them in
    words)."""
    entry = result.to_dict()
    if result.challenge is not None:
        entry["background_challenge"] = result.challenge.to_dict(names)
    return entry


def subgroup_frame(found: list[Subgroup], info: DatasetInfo) -> pd.DataFrame:
    """``subgroups.parquet``: one row per member image of each subgroup."""
    rows = [
        {"label": s.label, "class": info.class_names[s.label], "subgroup": s.number,
         "sample": m, "image_id": info.records[m].image_id}
        for s in found for m in s.members
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["label", "class", "subgroup", "sample", "image_id"])


def subgroup_evidence(found: list[Subgroup], info: DatasetInfo) -> dict[str, Any]:
    """The subgroups' mean maps for ``evidence.pt``."""
    return {"subgroup_means": {f"{info.class_names[s.label]}/{s.number}": s.mean_map
                               for s in found}}  # fmt: skip


def _subgroup_name(s: Subgroup, names: list[str]) -> str:
    return f"{names[s.label]}, subgroup {s.number} of {s.of} ({len(s.members)} images)"


def _subgroup_entry(s: Subgroup, info: DatasetInfo, config: AuditConfig) -> dict[str, Any]:
    entry = class_entry(s.result, info.class_names)
    return {
        "class": info.class_names[s.label], "index": s.label, "subgroup": s.number, "of": s.of,
        "n": len(s.members), "method": config.subgroup_method, "status": entry["status"],
        "findings": entry["findings"], "accuracy": entry["accuracy"],
        "metrics": entry["metrics"], "behaviour": entry["behaviour"],
        "members": [info.records[m].image_id for m in s.members],
    }  # fmt: skip


def skip_limit_error(summary: Summary) -> DataError | None:
    """The error to end an audit with when more images were skipped than ``max_skipped``
    allows, else None. The run is still written, so the skips can be read in the report."""
    dataset = summary.dataset
    if not dataset.skip_limit_exceeded:
        return None
    counts = ", ".join(f"{k} {v}" for k, v in dataset.skipped_by_reason.items())
    return DataError(
        f"{dataset.spec}: {dataset.n_skipped} of {dataset.n_images} images skipped "
        f"({counts}), more than --max-skipped {dataset.max_skipped:g} allows."
    )
