"""The streaming audit: batches -> maps -> per-sample rows + bounded exemplars -> results.

Maps never pile up: each batch's maps are scored, offered to the per-class exemplar sets,
and dropped. Only :func:`audit` knows every stage.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from auditor import __version__
from auditor.attribution.engine import CAM_METHODS, compute
from auditor.config import AuditConfig
from auditor.data.records import AuditDataset, DatasetInfo, Record, parse_skip, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.detect.counterfactual import DonorPool, behaviour, remove_object
from auditor.detect.stats import ClassResult, class_results, verdict
from auditor.errors import ConfigError, DataError
from auditor.exemplars import ClassEvidence, Exemplar, thumbnail, thumbnail_maps, thumbnail_masks
from auditor.models import LoadedModel, TargetLayer, file_sha256, load_model, resolve_target_layer
from auditor.scoring import chance_corrected, energy_inside, mask_fraction

log = logging.getLogger(__name__)


@dataclass
class AuditRun:
    """Everything an audit produced; :mod:`auditor.store` writes and reads it."""

    summary: dict[str, Any]
    samples: pd.DataFrame
    run_info: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def verdict(self) -> str:
        return str(self.summary["verdict"])

    @property
    def flagged_classes(self) -> list[str]:
        return list(self.summary["flagged_classes"])

    def _repr_html_(self) -> str:
        from auditor.report.render import render_summary_html

        return render_summary_html(self)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available.")
    return torch.device(device)


def audit(
    model: str | LoadedModel,
    *,
    data: str | Path,
    weights: str | Path | None = None,
    images: str | Path | None = None,
    config: AuditConfig | None = None,
    progress: bool = False,
) -> AuditRun:
    """Audit ``model`` on ``data`` and return the results (see :func:`auditor.store.save_run`)."""
    config = config or AuditConfig()
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model, weights)
    info = read_dataset(data, images=images)
    _check_classes(loaded, info)
    device = resolve_device(config.device)
    net = loaded.model.to(device)
    layer = _target_layer(net, config, device)
    transform = AuditTransform(config.image_size, config.normalize)
    evidence = {i: ClassEvidence(config.exemplars_per_class) for i in range(len(info.class_names))}
    pool = donor_pool(info.records, transform, size=config.donor_pool, device=device)
    rows: list[dict[str, Any]] = []
    for batch in _batches(info.records, transform, config, device, progress):
        rows += _audit_batch(net, batch, info.records, layer, transform, evidence, config, pool)
    samples = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    results = class_results(samples, info.class_names, config.methods, config.detect)
    timings = {"total_s": round(time.perf_counter() - started, 3)}
    return AuditRun(
        summary=_summary(loaded, info, data, config, results, samples),
        samples=samples,
        run_info=_run_info(loaded, info, data, config, layer, device, timings),
        evidence=_evidence_payload(evidence, info.class_names),
    )


SAMPLE_COLUMNS = [
    "sample", "image_id", "file_name", "label", "label_name", "prediction", "correct", "method",
    "energy_inside", "chance_corrected", "mask_fraction", "pred_swapped", "donor_label",
    "pred_background_only", "pred_object_only", "skip_reason", "skip_detail",
]  # fmt: skip


def donor_pool(
    records: list[Record], transform: AuditTransform, *, size: int, device: torch.device
) -> DonorPool | None:
    """Object-free backgrounds of up to ``size`` usable images spread evenly over the dataset."""
    if size <= 0 or not records:
        return None
    dataset = AuditDataset(records, transform)
    picks = sorted({int(i) for i in torch.linspace(0, len(records) - 1, min(size, len(records)))})
    samples = [s for s in (dataset[i] for i in picks) if not s["skip"]]
    if not samples:
        return None
    inputs = torch.stack([s["inputs"] for s in samples]).to(device)
    masks = torch.stack([s["masks"] for s in samples]).to(device)
    labels = torch.tensor([s["targets"] for s in samples])
    return DonorPool(remove_object(inputs, masks), labels)


def _check_classes(loaded: LoadedModel, info: DatasetInfo) -> None:
    k = loaded.num_classes
    if k is not None and k < len(info.class_names):
        raise DataError(
            f"{info.source}: {len(info.class_names)} categories, but the model has {k} outputs."
        )


def _target_layer(
    net: torch.nn.Module, config: AuditConfig, device: torch.device
) -> TargetLayer | None:
    if not any(m in CAM_METHODS for m in config.methods):
        return None
    return resolve_target_layer(
        net, config.target_layer, image_size=config.image_size, device=device
    )


def _batches(
    records: list[Record],
    transform: AuditTransform,
    config: AuditConfig,
    device: torch.device,
    progress: bool,
) -> Iterator[dict[str, Any]]:
    loader = DataLoader(
        AuditDataset(records, transform),
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )
    with tqdm(total=len(records), desc="audit", unit="img", disable=not progress) as bar:
        for batch in loader:
            bar.update(len(batch["index"]))
            yield batch


def _audit_batch(
    net: torch.nn.Module,
    batch: dict[str, Any],
    records: list[Record],
    layer: TargetLayer | None,
    transform: AuditTransform,
    evidence: dict[int, ClassEvidence],
    config: AuditConfig,
    pool: DonorPool | None,
) -> list[dict[str, Any]]:
    skips = list(batch["skip"])
    rows = [_skip_row(int(i), records[int(i)], s) for i, s in zip(batch["index"], skips) if s]
    keep = torch.tensor([not s for s in skips])
    if not keep.any():
        return rows
    device = next(net.parameters()).device
    inputs = batch["inputs"][keep].to(device, non_blocking=True)
    masks = batch["masks"][keep].to(device, non_blocking=True)
    targets = batch["targets"][keep].to(device)
    indices = [int(i) for i in batch["index"][keep]]
    result = compute(
        net, inputs, targets, methods=config.methods, target_layer=layer.module if layer else None
    )
    predictions = result.logits.argmax(1)
    scores = {m: _scores(maps, masks) for m, maps in result.maps.items()}
    acts = _behaviour_columns(net, inputs, masks, targets, indices, pool)
    for j, index in enumerate(indices):
        extra = {name: values[j] for name, values in acts.items()}
        rows += _sample_rows(index, records[index], int(predictions[j]), scores, j, extra)
    _collect_evidence(
        evidence,
        inputs,
        masks,
        result.maps,
        targets,
        predictions,
        indices,
        records,
        scores,
        transform,
        config,
    )
    return rows


def _behaviour_columns(
    net: torch.nn.Module,
    inputs: torch.Tensor,
    masks: torch.Tensor,
    targets: torch.Tensor,
    indices: list[int],
    pool: DonorPool | None,
) -> dict[str, list[int]]:
    if pool is None:
        return {}
    keys = torch.tensor(indices)
    b = behaviour(net, inputs, masks, targets, keys, pool)
    return {
        "pred_swapped": b.swapped.tolist(), "donor_label": b.donor_labels.tolist(),
        "pred_background_only": b.background_only.tolist(),
        "pred_object_only": b.object_only.tolist(),
    }  # fmt: skip


def _scores(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, list[float]]:
    return {
        "energy_inside": energy_inside(maps, masks).tolist(),
        "chance_corrected": chance_corrected(maps, masks).tolist(),
        "mask_fraction": mask_fraction(masks).tolist(),
    }


def _sample_rows(
    index: int,
    record: Record,
    prediction: int,
    scores: dict[str, dict[str, list[float]]],
    j: int,
    extra: dict[str, int],
) -> list[dict[str, Any]]:
    base = _base_row(index, record) | {
        "prediction": prediction,
        "correct": prediction == record.label,
    }
    base |= extra
    return [
        base
        | {"method": method}
        | {name: values[j] for name, values in per.items()}
        | {"skip_reason": None, "skip_detail": None}
        for method, per in scores.items()
    ]


def _skip_row(index: int, record: Record, skip: str) -> dict[str, Any]:
    reason, detail = parse_skip(skip)
    nan = float("nan")
    return _base_row(index, record) | {
        "prediction": -1, "correct": False, "method": None, "energy_inside": nan,
        "chance_corrected": nan, "mask_fraction": nan, "pred_swapped": None, "donor_label": None,
        "pred_background_only": None, "pred_object_only": None,
        "skip_reason": reason, "skip_detail": detail,
    }  # fmt: skip


def _base_row(index: int, record: Record) -> dict[str, Any]:
    return {
        "sample": index, "image_id": record.image_id, "file_name": str(record.path),
        "label": record.label, "label_name": record.label_name,
    }  # fmt: skip


def _collect_evidence(
    evidence: dict[int, ClassEvidence],
    inputs: torch.Tensor,
    masks: torch.Tensor,
    maps: dict[str, torch.Tensor],
    targets: torch.Tensor,
    predictions: torch.Tensor,
    indices: list[int],
    records: list[Record],
    scores: dict[str, dict[str, list[float]]],
    transform: AuditTransform,
    config: AuditConfig,
) -> None:
    primary = config.methods[0]
    for label in targets.unique().tolist():
        picked = (targets == label).nonzero().flatten()
        evidence[label].add_means({m: v[picked] for m, v in maps.items()}, masks[picked])
    candidates = _worst_per_class(
        targets, scores[primary]["chance_corrected"], config.exemplars_per_class
    )
    if not candidates:
        return
    pick = torch.tensor(candidates, device=inputs.device)
    images = thumbnail(transform.denormalize(inputs[pick]))
    small_masks = thumbnail_masks(masks[pick])
    small_maps = {m: thumbnail_maps(v[pick]) for m, v in maps.items()}
    for k, j in enumerate(candidates):
        record = records[indices[j]]
        exemplar = Exemplar(
            score=scores[primary]["chance_corrected"][j],
            image_id=record.image_id,
            file_name=str(record.path.name),
            label=record.label,
            prediction=int(predictions[j]),
            image=images[k],
            mask=small_masks[k],
            maps={m: v[k] for m, v in small_maps.items()},
            scores={m: s["chance_corrected"][j] for m, s in scores.items()},
        )
        evidence[record.label].offer(exemplar, tiebreak=indices[j])


def _worst_per_class(targets: torch.Tensor, primary: list[float], keep: int) -> list[int]:
    """Indices into the batch of each class's ``keep`` lowest finite scores."""
    by_class: dict[int, list[tuple[float, int]]] = {}
    for j, (label, score) in enumerate(zip(targets.tolist(), primary)):
        if score == score:  # not NaN
            by_class.setdefault(label, []).append((score, j))
    return sorted(j for items in by_class.values() for _, j in sorted(items)[:keep])


def _evidence_payload(evidence: dict[int, ClassEvidence], names: list[str]) -> dict[str, Any]:
    return {
        "classes": {
            names[i]: {"exemplars": [e.to_dict() for e in ev.exemplars()], "means": ev.means()}
            for i, ev in evidence.items()
        }
    }


def _summary(
    loaded: LoadedModel,
    info: DatasetInfo,
    data: str | Path,
    config: AuditConfig,
    results: list[ClassResult],
    samples: pd.DataFrame,
) -> dict[str, Any]:
    skipped = samples[samples["skip_reason"].notna()]
    return {
        "schema_version": 1,
        "auditor_version": __version__,
        "verdict": verdict(results),
        "flagged_classes": [r.name for r in results if r.flagged],
        "model": {"spec": loaded.spec, "sha256": loaded.sha256},
        "dataset": {
            "spec": str(data),
            "sha256": file_sha256(info.source) if info.source.is_file() else None,
            "n_images": len(info.records),
            "n_skipped": int(skipped["sample"].nunique()),
            "skipped_by_reason": {
                str(k): int(v) for k, v in skipped["skip_reason"].value_counts().items()
            },
        },
        "methods": list(config.methods),
        "classes": [r.to_dict() for r in results],
    }


def _run_info(
    loaded: LoadedModel,
    info: DatasetInfo,
    data: str | Path,
    config: AuditConfig,
    layer: TargetLayer | None,
    device: torch.device,
    timings: dict[str, float],
) -> dict[str, Any]:
    return {
        "auditor_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "model": {"spec": loaded.spec, "sha256": loaded.sha256, "num_classes": loaded.num_classes},
        "data": {"spec": str(data), "class_names": info.class_names},
        "target_layer": None if layer is None else {
            "name": layer.name, "cells": list(layer.cells), "automatic": layer.automatic,
        },
        "device": str(device),
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": _version("torchvision"), "numpy": _version("numpy"),
        },
        "timings": timings,
    }  # fmt: skip


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
