"""What decides an audit's rows, as digests: the model's weights, the parsed annotations, the
image files and mask files they point at, and the settings.

The resume checkpoint is keyed by these parts, so a rerun with another ``--images`` folder,
edited images, retrained weights or other settings starts afresh instead of merging rows of
two different audits; and when it does, the parts that differ say what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from auditor._version import __version__
from auditor.config import AuditConfig
from auditor.data.entries import Record
from auditor.data.masks import PngMask, UnionMask
from auditor.data.read import DatasetInfo
from auditor.models import LoadedModel, TargetLayer

# Settings that cannot change a row: worker processes load the same samples in the same
# order; the history only records the run.
ROW_NEUTRAL_SETTINGS = ("num_workers", "history", "name")

PART_NAMES = {
    "auditor": "the auditor version",
    "model": "the model or its weights",
    "annotations": "the annotations (records, labels, masks or classes)",
    "mask_files": "the mask files",
    "image_paths": "the image paths (another --images folder?)",
    "image_files": "the image files (sizes or modification times)",
    "settings": "the settings",
}


def digest(*parts: Any) -> str:
    """A stable sha256 of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes and values)."""
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        sha.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        sha.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def input_parts(
    model: nn.Module, *, spec: str, info: DatasetInfo, config: AuditConfig
) -> dict[str, str]:
    """One digest per part of what decides the rows; see :data:`PART_NAMES`."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ROW_NEUTRAL_SETTINGS}
    records = info.records
    return {
        "auditor": __version__,
        "model": digest(spec, model_digest(model)),
        "annotations": digest(info.class_names, [_record_identity(r) for r in records]),
        "mask_files": digest([[str(p), *_file_identity(p)] for p in _mask_files(records)]),
        "image_paths": digest([_resolved(r.path) for r in records]),
        "image_files": digest([_file_identity(r.path) for r in records]),
        "settings": digest(settings),
    }


def fingerprint(parts: dict[str, str], weights_sha256: str | None) -> dict[str, str | None]:
    """What identifies an audit in the history: the model (the weights file's sha256, else
    the digest of its parameters), the data (annotations, mask files and image files, not
    where they lie), the settings and the auditor version. Two runs with equal fingerprints
    audited the same thing the same way."""
    return {
        "model_sha256": weights_sha256 or parts["model"],
        "data_sha256": digest(parts["annotations"], parts["mask_files"], parts["image_files"]),
        "config_hash": parts["settings"],
        "auditor_version": parts["auditor"],
    }


def changed_parts(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """The parts that differ (keys of :data:`PART_NAMES`, which has their words)."""
    return [k for k in PART_NAMES if saved.get(k) != now.get(k)]


def _record_identity(record: Record) -> list[Any]:
    """Everything the reader decided for a record but where its image lies (that is
    ``image_paths``); decoders are dataclasses, so their repr holds the polygons, RLE, boxes
    or mask paths."""
    return [
        record.image_id, record.path.name, record.label, record.label_name, record.height,
        record.width, record.skip, record.skip_detail, list(record.other_labels),
        repr(record.decode_mask), repr(record.decode_ignore), list(record.attributes),
    ]  # fmt: skip


def _mask_files(records: Iterable[Record]) -> Iterator[Path]:
    for record in records:
        for decoder in (record.decode_mask, record.decode_ignore):
            yield from _png_paths(decoder)


def _png_paths(decoder: object) -> Iterator[Path]:
    if isinstance(decoder, PngMask):
        yield decoder.path
    elif isinstance(decoder, UnionMask):
        for part in decoder.parts:
            yield from _png_paths(part)


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path)


def _file_identity(path: Path) -> list[Any]:
    """[size, modification time in ns] of a file, or [None, None] when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return [None, None]
    return [stat.st_size, stat.st_mtime_ns]


def run_info(
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
            "layout": layer.layout,
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
