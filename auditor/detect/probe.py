"""The data probe: can the label be read off the background alone, whatever the model?

Each usable image gives two views (:mod:`auditor.detect.probe_features`): the background
alone (the object removed as the audit's interventions remove it) and the object alone (its
mask on mid-grey), each described by the same fixed features. A standardised, class-balanced
logistic regression predicts the label from each view's features, cross-validated
(stratified k-fold, seeded), so every image is predicted by a model that never saw it.
Only classes with at least ``folds`` usable images take part; chance is 1/K over those K.

Status per class (``min_n``, ``alpha`` and ``min_gap`` from :class:`~auditor.config.DetectConfig`):

- **insufficient_data**: fewer than ``min_n`` usable images, or not in the cross-validation
  (fewer than ``folds`` images, or no second class with that many): never pass.
- **flag**: the background alone gives the class (its background-only recall r) above
  chance, one-sided binomial p < ``alpha`` after Benjamini-Hochberg across classes, with
  r - 1/K >= ``min_gap``; *and* the class's backgrounds are its own: r beats the rate at
  which the backgrounds of every other class are called this class, by ``min_gap`` with a
  one-sided Fisher p < ``alpha``, also after Benjamini-Hochberg across classes (the audit's
  background-only test, :func:`auditor.detect.rule.background_identifies`). Without the
  second condition, when two classes sit on their own backgrounds and two share neutral
  ones, the sharing classes beat 1/K too: their background rules the planted classes out
  without identifying them.
  That case (the first condition alone, finding ``background_narrows``) is reported in the
  reasons but sets no status: a classifier that merely favours one class beats 1/K on it as
  well, and warned on control data with backgrounds independent of the class.
- **warn**: not flagged, and the class's objects stand out in geometry from the other
  classes' objects (:func:`~auditor.detect.probe_geometry.geometry_findings`): median area
  share below 1/``size_ratio`` or above ``size_ratio`` times theirs, centroid spread below
  ``spread_ratio`` times theirs, or the mean centroid more than ``max_offset`` of the image
  side away from theirs.
- **pass**: otherwise.

Skipped images (the reader's and the loader's skip reasons, and ``no_background``: less than
``min_background`` of the image is left to describe the background, outside the square of
side ``background_side`` around the object's box, the box and the ignore region) are counted
and listed, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest

from auditor.config import DetectConfig
from auditor.data.dataset import AuditDataset, parse_skip
from auditor.data.entries import Record
from auditor.data.transforms import AuditTransform
from auditor.detect.behaviour import Identification, identification
from auditor.detect.probe_features import (
    FEATURES,
    VIEWS,
    background_region,
    background_view,
    describe,
    object_geometry,
    object_view,
)
from auditor.detect.probe_geometry import (
    GEOMETRY_FINDINGS,
    geometry_findings,
    position_stats,
    size_stats,
)
from auditor.detect.rule import Status, Verdict, background_identifies
from auditor.detect.stats_util import benjamini_hochberg, finite
from auditor.errors import ConfigError

log = logging.getLogger(__name__)

NO_BACKGROUND = "no_background"
CLASSIFIER = "standardised features, logistic regression (L2, C=1, class-balanced weights)"


@dataclass(frozen=True)
class ProbeConfig:
    """Settings of the probe; thresholds of the rule come from ``detect``."""

    image_size: int = 64
    folds: int = 5
    seed: int = 0
    batch_size: int = 64
    min_background: float = 0.1
    background_side: float = 0.7
    size_ratio: float = 3.0
    spread_ratio: float = 0.5
    max_offset: float = 0.2
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        checks = {
            "image_size": self.image_size >= 8,
            "folds": self.folds >= 2,
            "batch_size": self.batch_size >= 1,
            "min_background": 0 <= self.min_background < 1,
            "background_side": 0 <= self.background_side < 1,
            "size_ratio": self.size_ratio > 1,
            "spread_ratio": 0 < self.spread_ratio < 1,
            "max_offset": 0 < self.max_offset < 1,
        }
        ranges = {"image_size": ">= 8", "folds": ">= 2", "batch_size": ">= 1",
                  "min_background": "in [0, 1)", "background_side": "in [0, 1)",
                  "size_ratio": "> 1",
                  "spread_ratio": "in (0, 1)", "max_offset": "in (0, 1)"}  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"Expected {name} {ranges[name]}, got {getattr(self, name)}.")


@dataclass(frozen=True)
class Skipped:
    image_id: str
    file: str
    reason: str
    detail: str


Example = tuple[np.ndarray, np.ndarray]
"""An image's background-only and object-only views, uint8 ``[S, S, 3]``, for the report."""


@dataclass(frozen=True)
class ProbeData:
    """The usable images, described: ``labels`` (int[N]), ``background`` and ``objects``
    features (float[N, F]), ``geometry`` (float[N, 3]: area share, centroid x, centroid y);
    every other record is in ``skipped``. ``examples``: the views of each class's first
    ``EXAMPLES`` usable images."""

    labels: np.ndarray
    background: np.ndarray
    objects: np.ndarray
    geometry: np.ndarray
    skipped: list[Skipped]
    n_images: int
    examples: dict[int, list[Example]] = field(default_factory=dict)


EXAMPLES = 2


def collect(records: Sequence[Record], *, config: ProbeConfig) -> ProbeData:
    """Load every record at ``image_size`` (no normalisation) and describe its two views."""
    dataset = AuditDataset(records, AuditTransform(config.image_size, "none"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, num_workers=0)
    parts, skipped = [], []
    examples: dict[int, list[Example]] = {}
    with torch.no_grad():
        for batch in loader:
            part, skips, keep = _describe_batch(batch, records, config)
            parts.append(part)
            skipped.extend(skips)
            _add_examples(examples, batch, keep)
    if not parts:
        parts = [(np.zeros(0, np.int64), np.zeros((0, 1)), np.zeros((0, 1)), np.zeros((0, 3)))]
    labels, background, objects, geometry = (np.concatenate(column) for column in zip(*parts))
    return ProbeData(
        labels, background, objects, geometry, skipped, n_images=len(records), examples=examples
    )


def _describe_batch(
    batch: dict[str, Any], records: Sequence[Record], config: ProbeConfig
) -> tuple[tuple[np.ndarray, ...], list[Skipped], torch.Tensor]:
    """A batch's usable samples described, its skips, and the usable positions."""
    region = background_region(batch["masks"], batch["ignore"], side=config.background_side)
    share = region.flatten(1).float().mean(1)
    skips, keep = [], []
    for j, (index, skip) in enumerate(zip(batch["index"].tolist(), batch["skip"])):
        record = records[index]
        if not skip and share[j] < config.min_background:
            skip = f"{NO_BACKGROUND}:{100 * share[j]:.0f}% of the image is left around the object"
        if skip:
            reason, detail = parse_skip(skip)
            skips.append(Skipped(record.image_id, str(record.path), reason, detail))
        else:
            keep.append(j)
    at = torch.tensor(keep, dtype=torch.long)
    inputs, masks, ignore = batch["inputs"][at], batch["masks"][at], batch["ignore"][at]
    part = (
        batch["targets"][at].numpy().astype(np.int64),
        describe(inputs, region[at]).double().numpy(),  # = the filled view's, over region
        describe(object_view(inputs, masks, ignore)).double().numpy(),
        object_geometry(masks).double().numpy(),
    )
    return part, skips, at


def _add_examples(
    examples: dict[int, list[Example]], batch: dict[str, Any], keep: torch.Tensor
) -> None:
    """Append the views of usable samples to their class's examples, up to ``EXAMPLES``."""
    for at, label in zip(keep.tolist(), batch["targets"][keep].tolist()):
        shown = examples.setdefault(label, [])
        if len(shown) >= EXAMPLES:
            continue
        inputs, masks, ignore = (batch[key][at : at + 1] for key in ("inputs", "masks", "ignore"))
        background = background_view(inputs, masks, ignore)[0]
        shown.append((_pixels(background), _pixels(object_view(inputs, masks, ignore)[0])))


def _pixels(view: torch.Tensor) -> np.ndarray:
    """Tensor[3, S, S] in [0, 1] -> uint8 [S, S, 3]."""
    return (view.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def cross_validated_predictions(
    features: np.ndarray, labels: np.ndarray, *, folds: int, seed: int
) -> np.ndarray:
    """Each image's label predicted by a model fit on the other folds.

    features (float[N, F]), labels (int[N], every class at least ``folds`` times) -> int[N]
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced")
    )
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        predictions = cross_val_predict(model, features, labels, cv=splits)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("probe: the logistic regression did not fully converge")
    return np.asarray(predictions, dtype=np.int64)


@dataclass(frozen=True)
class ClassProbe:
    """One class's probe results (numbers and finding codes; words live in the report)."""

    index: int
    name: str
    n: int
    status: Status
    findings: tuple[str, ...]
    background: Identification
    adjusted: Identification  # p-values after Benjamini-Hochberg across classes
    ci: tuple[float, float]
    object_accuracy: float
    object_ci: tuple[float, float]
    size: dict[str, float]
    position: dict[str, float]

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        ident = self.background
        closest = None
        if ident.baseline_class >= 0:
            closest = {
                "index": ident.baseline_class,
                "name": names[ident.baseline_class],
                "background_only_rate": finite(ident.baseline),
                "p": finite(ident.p),
                "p_adjusted": finite(self.adjusted.p),
            }
        return {
            "index": self.index, "name": self.name, "n": self.n, "status": self.status,
            "findings": list(self.findings),
            "background_only_accuracy": finite(ident.rate), "ci95": [finite(v) for v in self.ci],
            "p": finite(ident.p_chance), "p_adjusted": finite(self.adjusted.p_chance),
            "chance": finite(ident.chance), "closest_class": closest,
            "object_only_accuracy": finite(self.object_accuracy),
            "object_only_ci95": [finite(v) for v in self.object_ci],
            "object_size": {k: finite(v) for k, v in self.size.items()},
            "object_position": {k: finite(v) for k, v in self.position.items()},
        }  # fmt: skip


def cv_classes(labels: np.ndarray, k: int, folds: int) -> list[int]:
    """Classes with at least ``folds`` images; none when fewer than two have that many."""
    counts = np.bincount(labels, minlength=k)
    usable = [c for c in range(k) if counts[c] >= folds]
    return usable if len(usable) >= 2 else []


def probe(data: ProbeData, class_names: Sequence[str], *, config: ProbeConfig) -> list[ClassProbe]:
    """Per class (in ``class_names`` order): accuracies, tests, geometry and status."""
    k = len(class_names)
    in_cv = np.isin(data.labels, cv_classes(data.labels, k, config.folds))
    frame = pd.DataFrame({"label": data.labels[in_cv]})
    for column, features in (("pred_background_only", data.background),
                             ("pred_object_only", data.objects)):  # fmt: skip
        frame[column] = (
            cross_validated_predictions(
                features[in_cv], data.labels[in_cv], folds=config.folds, seed=config.seed
            )
            if in_cv.any()
            else np.zeros(0, np.int64)
        )
    k_cv = frame["label"].nunique()
    idents = [_identify(frame, c, k_cv) for c in range(k)]
    chance_p = benjamini_hochberg([i.p_chance for i in idents])
    closest_p = benjamini_hochberg([i.p for i in idents])
    adjusted = [
        dataclasses.replace(i, p=p, p_chance=q) for i, p, q in zip(idents, closest_p, chance_p)
    ]
    return [
        _class_probe(data, frame, c, class_names[c], idents[c], adjusted[c], config)
        for c in range(k)
    ]


def _identify(frame: pd.DataFrame, label: int, k: int) -> Identification:
    if not (frame["label"] == label).any():
        return Identification(float("nan"), float("nan"), -1, float("nan"))
    return identification(frame, label, k)


def _class_probe(
    data: ProbeData,
    frame: pd.DataFrame,
    label: int,
    name: str,
    ident: Identification,
    adjusted: Identification,
    config: ProbeConfig,
) -> ClassProbe:
    own = frame[frame["label"] == label]
    hits = int((own["pred_background_only"] == label).sum())
    object_hits = int((own["pred_object_only"] == label).sum())
    mine = data.labels == label
    size = size_stats(data.geometry[mine, 0], data.geometry[~mine, 0])
    position = position_stats(data.geometry[mine, 1:], data.geometry[~mine, 1:])
    findings = _findings(int(mine.sum()), len(own), adjusted, config)
    if mine.sum() >= config.detect.min_n and (~mine).sum() >= config.detect.min_n:
        findings += geometry_findings(size, position, config)
    return ClassProbe(
        index=label, name=name, n=int(mine.sum()), status=status(findings),
        findings=tuple(findings), background=ident, adjusted=adjusted,
        ci=wilson(hits, len(own), config.detect.confidence),
        object_accuracy=object_hits / len(own) if len(own) else float("nan"),
        object_ci=wilson(object_hits, len(own), config.detect.confidence),
        size=size, position=position,
    )  # fmt: skip


def _findings(n: int, n_cv: int, adjusted: Identification, config: ProbeConfig) -> list[str]:
    """Finding codes; ``adjusted`` holds the class's BH-adjusted p-values."""
    detect = config.detect
    findings = []
    if n < detect.min_n:
        findings.append("too_few_images")
    if n_cv == 0:
        findings.append("not_cross_validated")
        return findings
    above = adjusted.p_chance < detect.alpha and adjusted.rate - adjusted.chance >= detect.min_gap
    if above:
        own = background_identifies(adjusted, detect)
        findings.append("background_identifies" if own else "background_narrows")
    return findings


def status(findings: Sequence[str]) -> Status:
    """The rule of the module docstring, from a class's finding codes."""
    if "too_few_images" in findings or "not_cross_validated" in findings:
        return "insufficient_data"
    if "background_identifies" in findings:
        return "flag"
    return "warn" if set(findings) & set(GEOMETRY_FINDINGS) else "pass"


def wilson(hits: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion; (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    interval = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def skipped_by_reason(skipped: Sequence[Skipped]) -> dict[str, int]:
    return dict(Counter(s.reason for s in skipped).most_common())


def probe_summary(
    data: ProbeData,
    classes: Sequence[ClassProbe],
    *,
    spec: str,
    version: str,
    config: ProbeConfig,
) -> dict[str, Any]:
    """The ``data_summary.json`` content (strict JSON: NaN already turned into None),
    without the ``reasons`` in words, which the report adds."""
    names = [c.name for c in classes]
    skipped = [dataclasses.asdict(s) for s in data.skipped]
    return {
        "schema_version": 1,
        "auditor_version": version,
        "dataset": {
            "spec": spec,
            "n_images": data.n_images,
            "n_used": len(data.labels),
            "n_skipped": len(skipped),
            "skipped_by_reason": skipped_by_reason(data.skipped),
            "skipped": skipped,
        },
        "views": VIEWS,
        "features": FEATURES,
        "classifier": CLASSIFIER,
        "probe": probe_settings(config),
        "verdict": verdict(c.status for c in classes),
        "flagged_classes": [c.name for c in classes if c.status == "flag"],
        "classes": [c.to_dict(names) for c in classes],
    }


def verdict(statuses: Iterable[Status]) -> Verdict:
    """As the audit's: ``fail`` with a flag, ``warn`` with any other non-pass, else ``pass``."""
    seen = set(statuses)
    return "fail" if "flag" in seen else "warn" if seen - {"pass"} else "pass"


def probe_settings(config: ProbeConfig) -> dict[str, Any]:
    """The settings that decided the numbers and statuses."""
    detect = config.detect
    return {
        "image_size": config.image_size, "folds": config.folds, "seed": config.seed,
        "min_background": config.min_background,
        "background_side": config.background_side, "size_ratio": config.size_ratio,
        "spread_ratio": config.spread_ratio, "max_offset": config.max_offset,
        "min_n": detect.min_n, "alpha": detect.alpha, "min_gap": detect.min_gap,
        "confidence": detect.confidence,
    }  # fmt: skip
