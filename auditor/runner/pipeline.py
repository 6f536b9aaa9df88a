"""The streaming audit: batches -> maps -> per-sample rows + bounded exemplars -> results.

Maps never pile up: each batch's maps are scored, offered to the per-class exemplar sets,
and dropped. Only :func:`audit` knows every stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from auditor._version import __version__
from auditor.config import AuditConfig
from auditor.data.attributes import check_group_by, group_value
from auditor.data.dataset import AuditDataset
from auditor.data.entries import Record
from auditor.data.read import DatasetInfo, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.detect.groups import GroupResult, group_column, group_results
from auditor.detect.interventions import DonorPool, remove_object
from auditor.detect.rule import ClassResult, class_results, verdict
from auditor.errors import DataError
from auditor.models import LoadedModel, count_outputs, file_sha256, load_model
from auditor.report.words import reasons
from auditor.run import AuditRun
from auditor.runner.batch import SAMPLE_COLUMNS, audit_batch
from auditor.runner.checkpoint import Checkpoint, Progress
from auditor.runner.exemplars import ClassEvidence, evidence_payload
from auditor.runner.preflight import (
    check_classes,
    method_trust,
    probe_samples,
    resolve_device,
    runnable_methods,
    target_layer,
)
from auditor.runner.provenance import input_parts, run_info

log = logging.getLogger(__name__)


def audit(
    model: str | LoadedModel,
    *,
    data: str | Path,
    weights: str | Path | None = None,
    images: str | Path | None = None,
    config: AuditConfig | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
) -> AuditRun:
    """Audit ``model`` on ``data`` and return the results (see :func:`auditor.run.save_run`).

    With ``checkpoint``, progress is saved there as the audit goes, and an earlier
    interrupted run of the same model, data and config resumes where it stopped.
    """
    config = config or AuditConfig()
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model, weights)
    info = read_dataset(
        data,
        images=images,
        split=config.split,
        label_policy=config.label_policy,
        class_map=config.class_map,
        attributes=config.attributes,
    )
    if not info.records:
        raise DataError(f"{info.source}: the dataset lists no image to audit.")
    check_group_by(info.records, config.group_by, source=info.source)
    device = resolve_device(config.device)
    net = loaded.model.to(device)
    outputs = count_outputs(net, image_size=config.image_size, device=device)
    check_classes(outputs, info, explicit_map=config.class_map is not None)
    layer = target_layer(net, config, device)
    transform = AuditTransform(
        config.image_size, config.normalize, geometry="pad" if config.keep_aspect else "stretch"
    )
    fresh = {i: ClassEvidence(config.exemplars_per_class) for i in range(len(info.class_names))}
    data_sha = file_sha256(info.source) if info.source.is_file() else None  # hashed once
    parts = input_parts(net, spec=loaded.spec, info=info, config=config) if checkpoint else {}
    saver = Checkpoint(checkpoint, parts)
    state = saver.load(Progress(rows=[], evidence=fresh))
    probe = probe_samples(info.records, transform, size=config.donor_pool, device=device)
    config, method_errors = runnable_methods(net, probe, layer, config)
    pool = DonorPool(remove_object(probe.inputs, probe.masks), probe.labels) if probe else None
    trust = method_trust(net, probe, layer, config)
    stream = batches(info.records, transform, config, device, progress, start=state.done)
    try:
        for batch in stream:
            state.rows += audit_batch(
                net, batch, info.records, layer, transform, state.evidence, config, pool
            )
            state.done += len(batch["index"])
            saver.maybe_save(state)
    except BaseException:
        saver.maybe_save(state, force=True)
        raise
    evidence = state.evidence
    samples = with_groups(pd.DataFrame(state.rows, columns=SAMPLE_COLUMNS), info, config.group_by)
    _check_scored(samples, info)
    judge = {"untrusted": trust["untrusted"]}
    results = class_results(samples, info.class_names, config.methods, config.detect, **judge)
    groups = [
        group_results(samples, info.class_names, config.methods, config.detect, name, **judge)
        for name in config.group_by
    ]
    timings = {"total_s": round(time.perf_counter() - started, 3)}
    return AuditRun(
        summary=_summary(loaded, info, data, data_sha, config, results, samples)
        | _groups_summary(groups, results, info.class_names, config)
        | {"trust": trust, "method_errors": method_errors},
        samples=samples,
        run_info=run_info(loaded, outputs, info, data, config, layer, device, timings),
        evidence=evidence_payload(evidence, info.class_names),
    )


def batches(
    records: list[Record],
    transform: AuditTransform,
    config: AuditConfig,
    device: torch.device,
    progress: bool,
    *,
    start: int = 0,
) -> Iterator[dict[str, Any]]:
    """Batches of the samples from position ``start`` on, in dataset order."""
    workers = config.num_workers
    dataset = AuditDataset(records, transform)
    remaining = Subset(dataset, range(start, len(records))) if start else dataset
    loader = DataLoader(  # in order: batch k holds samples k*B .. k*B+B-1 with any workers
        remaining,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        in_order=True,
    )
    bar_options = {"total": len(records), "initial": start, "desc": "audit", "unit": "img"}
    with tqdm(**bar_options, disable=not progress) as bar:
        for batch in loader:
            bar.update(len(batch["index"]))
            yield batch


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


def _check_scored(samples: pd.DataFrame, info: DatasetInfo) -> None:
    """An audit that scored no image is an error, never a verdict."""
    if samples["skip_reason"].isna().any():
        return
    reasons = samples["skip_reason"].value_counts()
    reason, count = str(reasons.index[0]), int(reasons.iloc[0])
    example = samples[samples["skip_reason"] == reason].iloc[0]
    hint = " (is --images the folder that holds them?)" if reason == "missing_file" else ""
    raise DataError(
        f"{info.source}: no image could be audited; all {len(samples)} were skipped, most often "
        f"{reason} ({count}), e.g. {example['file_name']}: {example['skip_detail']}{hint}"
    )


def skip_limit_error(summary: dict[str, Any]) -> DataError | None:
    """The error to end an audit with when more images were skipped than ``max_skipped``
    allows, else None. The run is still written, so the skips can be read in the report."""
    dataset = summary["dataset"]
    if not dataset.get("skip_limit_exceeded"):
        return None
    reasons = ", ".join(f"{k} {v}" for k, v in dataset["skipped_by_reason"].items())
    return DataError(
        f"{dataset['spec']}: {dataset['n_skipped']} of {dataset['n_images']} images skipped "
        f"({reasons}), more than --max-skipped {dataset['max_skipped']:g} allows."
    )


def _summary(
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
    fraction = n_skipped / len(info.records)
    return {
        "schema_version": 1,
        "auditor_version": __version__,
        "verdict": verdict(results),
        "flagged_classes": [r.name for r in results if r.flagged],
        "model": {"spec": loaded.spec, "sha256": loaded.sha256},
        "dataset": {
            "spec": str(data),
            "sha256": data_sha,
            "n_images": len(info.records),
            "n_scored": len(info.records) - n_skipped,
            "n_skipped": n_skipped,
            "skipped_by_reason": {
                str(k): int(v)
                for k, v in skipped.drop_duplicates("sample")["skip_reason"].value_counts().items()
            },
            "skipped_fraction": round(fraction, 4),
            "max_skipped": config.max_skipped,
            "skip_limit_exceeded": fraction > config.max_skipped,
        },
        "methods": list(config.methods),
        "primary_method": config.primary,
        "classes": [_class_entry(r, info.class_names, config) for r in results],
    }


def _groups_summary(
    groups: list[GroupResult], results: list[ClassResult], names: list[str], config: AuditConfig
) -> dict[str, Any]:
    """``groups`` per attribute, and the verdict counting a flagged class x group cell as a
    flag: a class can rely on a cue inside one group while the class as a whole passes."""
    if not groups:
        return {}
    entries = []
    for group in groups:
        entry = group.to_dict(config.primary)
        for cell in entry["cells"]:
            cell["reasons"] = reasons(cell, names, confidence=config.detect.confidence)
        entries.append(entry)
    cells = [r for g in groups for _, r in g.cells]
    return {
        "verdict": verdict([*results, *cells]),
        "flagged_groups": [name for g in groups for name in g.flagged()],
        "groups": entries,
    }


def _class_entry(result: ClassResult, names: list[str], config: AuditConfig) -> dict[str, Any]:
    """A class in ``summary.json``: its findings as values, and in words as ``reasons``."""
    entry = result.to_dict()
    entry["reasons"] = reasons(entry, names, confidence=config.detect.confidence)
    return entry
