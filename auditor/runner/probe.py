"""``auditor probe-data``: read a dataset, probe it without a model, write the summary and
the report. The output folder is locked for the whole job; every file is written atomically."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from auditor._version import __version__
from auditor.data import read_dataset
from auditor.data.transforms import AuditTransform
from auditor.detect.probe import ProbeConfig, ProbeData, collect, probe, probe_summary
from auditor.detect.probe_data import ViewFeatures
from auditor.errors import DataError
from auditor.models import load_model, penultimate
from auditor.report.data_report import with_reasons, write_data_reports
from auditor.rundir import Output, RunLock, atomic_write, claim
from auditor.runner.preflight import resolve_device

SUMMARY = "data_summary.json"
OUTPUTS = (SUMMARY, "data_report.html", "data_report.pdf")
DATA_PROBE = Output("probe-data", files=OUTPUTS, legacy=SUMMARY)


@dataclass(frozen=True)
class ProbeModel:
    """The model whose penultimate features describe the views (``probe-data --model``)."""

    spec: str
    weights: str | Path | None = None
    normalize: str = "imagenet"
    device: str = "auto"


def probe_to_dir(
    data: str | Path,
    *,
    out: str | Path,
    images: str | Path | None = None,
    config: ProbeConfig | None = None,
    model: ProbeModel | None = None,
    pdf: bool = True,
) -> dict[str, Any]:
    """Probe ``data`` and write ``data_summary.json``, ``data_report.html`` (and
    ``data_report.pdf``) into ``out``; return the summary. With ``model``, the views are
    described by its penultimate features instead of the fixed ones. Raises
    :class:`DataError` when no image is usable."""
    config = config or ProbeConfig()
    out = Path(out)
    claim(out, DATA_PROBE)
    with RunLock(out, purpose="auditor probe-data"):
        started = time.perf_counter()
        info = read_dataset(data, images=images)
        features, described = (None, None) if model is None else model_features(model, config)
        collected = collect(info.records, config=config, features=features)
        if len(collected.labels) == 0:
            raise DataError(nothing_usable(Path(data), collected))
        classes = probe(collected, info.class_names, config=config)
        summary = probe_summary(
            collected, classes, spec=str(data), version=__version__, config=config
        )
        if described is not None:
            summary["features"] = described(collected.background.shape[1])
            summary["feature_source"] = "model"
        summary = with_reasons(summary)
        summary["timings"] = {"probe_s": round(time.perf_counter() - started, 3)}
        for name in OUTPUTS:  # no file of an earlier probe may stay beside this one's
            (out / name).unlink(missing_ok=True)
        atomic_write(out / SUMMARY, strict_json(summary))
        write_data_reports(summary, collected.examples, out, pdf=pdf)
    return summary


def model_features(
    model: ProbeModel, config: ProbeConfig
) -> tuple[ViewFeatures, Callable[[int], str]]:
    """The model's penultimate features of views in [0, 1], normalised as the model takes
    them, on the audit's device; and the sentence that names them, given their number."""
    loaded = load_model(model.spec, model.weights)
    device = resolve_device(model.device)
    net = loaded.model.to(device).eval()
    transform = AuditTransform(config.image_size, model.normalize)

    def features(views: torch.Tensor) -> torch.Tensor:
        return penultimate(net, transform.normalize(views).to(device))

    def described(count: int) -> str:
        return (
            f"per view the {count} penultimate features of the model {model.spec} (the input "
            f"of its last linear layer), at {config.image_size} px, normalised with "
            f"{model.normalize}; the background-only view is the image with the object's box "
            "filled as the audit's interventions fill it"
        )

    return features, described


def strict_json(summary: dict[str, Any]) -> bytes:
    """Indented JSON; a NaN or infinity left anywhere is an error, never written."""
    return (json.dumps(summary, indent=2, allow_nan=False) + "\n").encode()


def nothing_usable(source: Path, collected: ProbeData) -> str:
    """One line: why no image could be probed, with the most common reason and an example."""
    if not collected.skipped:
        return f"{source}: the dataset lists no image to probe."
    reason, count = Counter(s.reason for s in collected.skipped).most_common(1)[0]
    example = next(s for s in collected.skipped if s.reason == reason)
    return (
        f"{source}: no usable image ({collected.n_images} skipped; most common reason "
        f"{reason}, {count} images, e.g. {example.file}: {example.detail[:120]})."
    )
