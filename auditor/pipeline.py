"""The streaming audit: batches -> maps -> per-sample rows + bounded exemplars -> results.

Maps never pile up: each batch's maps are scored, offered to the per-class exemplar sets,
and dropped. Only :func:`audit` knows every stage.
"""

from __future__ import annotations

import dataclasses
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
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from auditor import __version__
from auditor.attribution.engine import CAM_METHODS, compute
from auditor.checkpoint import Checkpoint, Progress
from auditor.config import AuditConfig
from auditor.data.records import AuditDataset, DatasetInfo, Record, parse_skip, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.detect.counterfactual import Behaviour, DonorPool, behaviour, remove_object
from auditor.detect.sanity import randomization_check, resolution_check
from auditor.detect.stats import ClassResult, class_results, verdict
from auditor.errors import AttributionError, ConfigError, DataError, ModelError
from auditor.exemplars import (
    BrokenSwaps,
    ClassEvidence,
    ScoredBatch,
    collect_evidence,
    evidence_payload,
)
from auditor.models import (
    LoadedModel,
    TargetLayer,
    count_outputs,
    file_sha256,
    is_scripted,
    load_model,
    resolve_target_layer,
)
from auditor.provenance import input_parts
from auditor.scoring import METRICS, chance_corrected, score_all

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
    checkpoint: Path | None = None,
) -> AuditRun:
    """Audit ``model`` on ``data`` and return the results (see :func:`auditor.store.save_run`).

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
    )
    if not info.records:
        raise DataError(f"{info.source}: the dataset lists no image to audit.")
    device = resolve_device(config.device)
    net = loaded.model.to(device)
    outputs = count_outputs(net, image_size=config.image_size, device=device)
    _check_classes(outputs, info, explicit_map=config.class_map is not None)
    layer = _target_layer(net, config, device)
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
    batches = _batches(info.records, transform, config, device, progress, start=state.done)
    try:
        for batch in batches:
            state.rows += _audit_batch(
                net, batch, info.records, layer, transform, state.evidence, config, pool
            )
            state.done += len(batch["index"])
            saver.maybe_save(state)
    except BaseException:
        saver.maybe_save(state, force=True)
        raise
    evidence = state.evidence
    samples = pd.DataFrame(state.rows, columns=SAMPLE_COLUMNS)
    _check_scored(samples, info)
    results = class_results(
        samples, info.class_names, config.methods, config.detect, untrusted=trust["untrusted"]
    )
    timings = {"total_s": round(time.perf_counter() - started, 3)}
    return AuditRun(
        summary=_summary(loaded, info, data, data_sha, config, results, samples)
        | {"trust": trust, "method_errors": method_errors},
        samples=samples,
        run_info=_run_info(loaded, outputs, info, data, config, layer, device, timings),
        evidence=evidence_payload(evidence, info.class_names),
    )


SAMPLE_COLUMNS = [
    "sample", "image_id", "file_name", "label", "label_name", "prediction", "correct", "method",
    *METRICS, "mask_fraction", "swap_chance_corrected", "pred_swapped", "donor_label",
    "pred_background_only", "pred_object_only", "prob_label", "prob_label_swapped",
    "prob_label_background_only", "prob_label_object_only", "skip_reason", "skip_detail",
]  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """A few usable samples spread evenly over the dataset, loaded once before the loop."""

    inputs: torch.Tensor  # Tensor[P, 3, S, S]
    masks: torch.Tensor  # Tensor[P, S, S] bool
    labels: torch.Tensor  # Tensor[P]


def probe_samples(
    records: list[Record], transform: AuditTransform, *, size: int, device: torch.device
) -> Probe | None:
    """Up to ``size`` usable samples at evenly spaced dataset positions."""
    if size <= 0 or not records:
        return None
    dataset = AuditDataset(records, transform)
    picks = sorted({int(i) for i in torch.linspace(0, len(records) - 1, min(size, len(records)))})
    samples = [s for s in (dataset[i] for i in picks) if not s["skip"]]
    if not samples:
        return None
    return Probe(
        inputs=torch.stack([s["inputs"] for s in samples]).to(device),
        masks=torch.stack([s["masks"] for s in samples]).to(device),
        labels=torch.tensor([s["targets"] for s in samples]),
    )


def runnable_methods(
    net: torch.nn.Module, probe: Probe | None, layer: TargetLayer | None, config: AuditConfig
) -> tuple[AuditConfig, dict[str, str]]:
    """Try each method on two probe samples; one that cannot run on this model (CAM without
    a GAP + linear head, guided backprop without ReLUs) is dropped and reported, so it ends
    as an error entry rather than ending the audit."""
    if probe is None:
        return config, {}
    errors = {}
    for method in config.methods:
        try:
            compute(net, probe.inputs[:2], probe.labels[:2].to(probe.inputs.device),
                    methods=(method,), target_layer=layer.module if layer else None)  # fmt: skip
        except AttributionError as exc:
            errors[method] = str(exc)
    kept = tuple(m for m in config.methods if m not in errors)
    if not kept:
        details = "; ".join(f"{m}: {e}" for m, e in errors.items())
        raise AttributionError(f"No requested method can run on this model ({details}).")
    return dataclasses.replace(config, methods=kept), errors


def method_trust(
    net: torch.nn.Module, probe: Probe | None, layer: TargetLayer | None, config: AuditConfig
) -> dict[str, Any]:
    """Which methods may drive a flag: resolution and model-randomisation checks."""
    if probe is None:
        return {"untrusted": {}, "randomization_similarity": {}, "object_side_px": None}
    side = float(probe.masks.flatten(1).sum(1).float().sqrt().median())
    untrusted = resolution_check(
        config.methods, cells=layer.cells if layer else None, image_size=config.image_size,
        object_side=side,
    )  # fmt: skip
    n = config.detect.sanity_samples
    similarity, failed = randomization_check(
        net, probe.inputs[:n], probe.labels[:n].to(probe.inputs.device), config.methods,
        target_layer=layer.name if layer else None,
        max_similarity=config.detect.sanity_max_similarity, seed=config.detect.seed,
    )  # fmt: skip
    return {
        "untrusted": {**failed, **untrusted},
        "randomization_similarity": similarity,
        "object_side_px": round(side, 1),
    }


def _check_classes(outputs: int, info: DatasetInfo, *, explicit_map: bool) -> None:
    """Model outputs and dataset classes must match one to one, unless a class map says
    which output each category is."""
    n = len(info.class_names)
    if outputs < n:
        raise DataError(f"{info.source}: {n} categories, but the model has {outputs} outputs.")
    if outputs > n and not explicit_map:
        raise DataError(
            f"{info.source}: the model has {outputs} outputs but the dataset has {n} categories; "
            "give --class-map to say which output each category is (auditor does not guess)."
        )


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


def _target_layer(
    net: torch.nn.Module, config: AuditConfig, device: torch.device
) -> TargetLayer | None:
    if not any(m in CAM_METHODS for m in config.methods):
        return None
    if is_scripted(net):
        if config.target_layer is not None:
            raise ModelError(
                f"--target-layer {config.target_layer}: a TorchScript model's layers cannot be "
                "hooked; CAM methods need an eager model (module:factory or a state_dict)."
            )
        return None  # the CAM methods are left out with their reason by runnable_methods
    return resolve_target_layer(
        net, config.target_layer, image_size=config.image_size, device=device
    )


def _batches(
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
    valid = ~batch["ignore"][keep].to(device) if "ignore" in batch else None
    scores = {m: score_all(maps, masks, valid) for m, maps in result.maps.items()}
    label_probability = result.logits.float().softmax(1).gather(1, targets[:, None])[:, 0]
    acts: dict[str, list[Any]] = {"prob_label": label_probability.tolist()}
    broken = None
    if pool is not None:
        b = behaviour(net, inputs, masks, targets, torch.tensor(indices), pool)
        acts |= _behaviour_columns(b)
        broken = _broken_swaps(net, b, targets, predictions, masks, valid, layer, config)
        for method in config.methods:
            scores[method]["swap_chance_corrected"] = _per_sample(broken, method, len(indices))
    for j, index in enumerate(indices):
        extra = {name: values[j] for name, values in acts.items()}
        rows += _sample_rows(index, records[index], int(predictions[j]), scores, j, extra)
    scored = ScoredBatch(
        inputs, masks, result.maps, targets, predictions, indices, scores, acts, broken
    )
    collect_evidence(evidence, scored, records, transform, config)
    return rows


def _behaviour_columns(b: Behaviour) -> dict[str, list[Any]]:
    probability = b.label_probability.tolist()
    return {
        "pred_swapped": b.swapped.tolist(), "donor_label": b.donor_labels.tolist(),
        "pred_background_only": b.background_only.tolist(),
        "pred_object_only": b.object_only.tolist(),
        "prob_label_swapped": probability[0], "prob_label_background_only": probability[1],
        "prob_label_object_only": probability[2],
    }  # fmt: skip


def _broken_swaps(
    net: torch.nn.Module,
    b: Behaviour,
    targets: torch.Tensor,
    predictions: torch.Tensor,
    masks: torch.Tensor,
    valid: torch.Tensor | None,
    layer: TargetLayer | None,
    config: AuditConfig,
) -> BrokenSwaps | None:
    """The swapped images whose right answer the swap broke, with the maps of the new
    prediction and their C. The object keeps its place and mask in the swapped image, so a
    negative C says the wrong answer was read off the background rather than caused by the
    pasted object's edge."""
    broken = b.broken(targets, predictions)
    if not broken.any():
        return None
    inputs, new = b.swapped_inputs[broken], b.swapped[broken]
    result = compute(
        net, inputs, new, methods=config.methods, target_layer=layer.module if layer else None
    )
    picked = None if valid is None else valid[broken]
    return BrokenSwaps(
        positions=broken.nonzero().flatten().tolist(),
        inputs=inputs,
        maps=result.maps,
        predictions=new,
        scores={
            m: chance_corrected(maps, masks[broken], picked).tolist()
            for m, maps in result.maps.items()
        },
    )


def _per_sample(broken: BrokenSwaps | None, method: str, n: int) -> list[float]:
    """A method's C of the broken swaps at their batch positions, NaN elsewhere."""
    values = [float("nan")] * n
    if broken is not None:
        for position, value in zip(broken.positions, broken.scores[method]):
            values[position] = value
    return values


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
        "prediction": -1, "correct": False, "method": None, "mask_fraction": nan,
        "swap_chance_corrected": nan,
        **dict.fromkeys(METRICS, nan), "pred_swapped": None, "donor_label": None,
        "pred_background_only": None, "pred_object_only": None,
        "skip_reason": reason, "skip_detail": detail,
    }  # fmt: skip


def _base_row(index: int, record: Record) -> dict[str, Any]:
    return {
        "sample": index, "image_id": record.image_id, "file_name": str(record.path),
        "label": record.label, "label_name": record.label_name,
    }  # fmt: skip


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
        "classes": [r.to_dict() for r in results],
    }


def _run_info(
    loaded: LoadedModel,
    outputs: int,
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
        "model": {"spec": loaded.spec, "sha256": loaded.sha256, "num_classes": outputs},
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
