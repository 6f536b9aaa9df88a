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
  r - 1/K >= ``min_gap``; *and* the class's backgrounds are its own: the lower end of the
  95% CI (Newcombe's hybrid score interval) of r minus the rate at which the backgrounds of
  the most similar other class are called this class is at least ``min_gap``. Without the
  second condition, when two classes sit on their own backgrounds and two share neutral
  ones, the sharing classes beat 1/K too: their background rules the planted classes out
  without identifying them. That case (the first condition alone, finding
  ``background_narrows``) is reported in the reasons but sets no status. The margin is on
  the CI's lower end, not on the point estimate with a test at ``alpha`` (the audit's
  :func:`~auditor.detect.rule.background_identifies`): that flagged the two sharing classes
  of 400 demo-like images whose recalls, 0.58 and 0.56, were CV noise around 0.5 (another
  fold seed gave 0.50 and 0.56), and does so in about one run in ten under permuted labels.
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from auditor.detect.behaviour import Identification, identification
from auditor.detect.findings import Status, Verdict
from auditor.detect.probe_data import ProbeConfig, ProbeData, Skipped, collect
from auditor.detect.probe_features import FEATURES, VIEWS
from auditor.detect.probe_geometry import (
    GEOMETRY_FINDINGS,
    geometry_findings,
    position_stats,
    size_stats,
)
from auditor.detect.stats_util import benjamini_hochberg, finite, newcombe, wilson

__all__ = ["ClassProbe", "ProbeConfig", "ProbeData", "collect", "probe", "probe_summary"]

log = logging.getLogger(__name__)

CLASSIFIER = "standardised features, logistic regression (L2, C=1, class-balanced weights)"


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
    """One class's probe results (numbers and finding codes; words live in the report).
    ``background`` holds the background-only recall, the closest other class's rate of being
    called this class (with its Fisher p) and the binomial p against chance, unadjusted;
    ``gap_ci`` is the CI of the difference of those two rates."""

    index: int
    name: str
    n: int
    status: Status
    findings: tuple[str, ...]
    background: Identification
    p_adjusted: float
    ci: tuple[float, float]
    gap_ci: tuple[float, float]
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
                "gap": finite(ident.rate - ident.baseline),
                "gap_ci95": [finite(v) for v in self.gap_ci],
                "p": finite(ident.p),
            }
        return {
            "index": self.index, "name": self.name, "n": self.n, "status": self.status,
            "findings": list(self.findings),
            "background_only_accuracy": finite(ident.rate), "ci95": [finite(v) for v in self.ci],
            "p": finite(ident.p_chance), "p_adjusted": finite(self.p_adjusted),
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
    adjusted = benjamini_hochberg([i.p_chance for i in idents])
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
    p_adjusted: float,
    config: ProbeConfig,
) -> ClassProbe:
    confidence = config.detect.confidence
    hits, n_cv = _called(frame, label, label)
    object_hits = int(((frame["label"] == label) & (frame["pred_object_only"] == label)).sum())
    mine = data.labels == label
    size = size_stats(data.geometry[mine, 0], data.geometry[~mine, 0])
    position = position_stats(data.geometry[mine, 1:], data.geometry[~mine, 1:])
    gap_ci = newcombe((hits, n_cv), _called(frame, ident.baseline_class, label), confidence)
    findings = _findings(int(mine.sum()), ident, p_adjusted, gap_ci, config)
    if mine.sum() >= config.detect.min_n and (~mine).sum() >= config.detect.min_n:
        findings += geometry_findings(size, position, config)
    return ClassProbe(
        index=label, name=name, n=int(mine.sum()), status=status(findings),
        findings=tuple(findings), background=ident, p_adjusted=p_adjusted,
        ci=wilson(hits, n_cv, confidence), gap_ci=gap_ci,
        object_accuracy=object_hits / n_cv if n_cv else float("nan"),
        object_ci=wilson(object_hits, n_cv, confidence), size=size, position=position,
    )  # fmt: skip


def _called(frame: pd.DataFrame, label: int, called: int) -> tuple[int, int]:
    """How many background-only views of class ``label`` were called ``called``, of how many."""
    own = frame["label"] == label
    return int((own & (frame["pred_background_only"] == called)).sum()), int(own.sum())


def _findings(
    n: int,
    ident: Identification,
    p_adjusted: float,
    gap_ci: tuple[float, float],
    config: ProbeConfig,
) -> list[str]:
    """Finding codes of the background test (``p_adjusted``: BH-adjusted binomial p)."""
    detect = config.detect
    findings = []
    if n < detect.min_n:
        findings.append("too_few_images")
    if not np.isfinite(ident.rate):
        findings.append("not_cross_validated")
        return findings
    if p_adjusted < detect.alpha and ident.rate - ident.chance >= detect.min_gap:
        own = gap_ci[0] >= detect.min_gap
        findings.append("background_identifies" if own else "background_narrows")
    return findings


def status(findings: Sequence[str]) -> Status:
    """The rule of the module docstring, from a class's finding codes."""
    if "too_few_images" in findings or "not_cross_validated" in findings:
        return "insufficient_data"
    if "background_identifies" in findings:
        return "flag"
    return "warn" if set(findings) & set(GEOMETRY_FINDINGS) else "pass"


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
        "feature_source": "fixed",
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
