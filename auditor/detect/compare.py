"""Two runs of an audit, class by class: what changed, with a CI for each difference, and
which changes are regressions (numbers only; the report words them).

Per class present in both runs: the status before and after, and the change in accuracy, in
the primary method's mean chance-corrected energy C, and in the swap gap, each with a
percentile bootstrap CI. When both runs audited the same data (equal data sha256), the
differences are paired: images are matched by (image id, label) and resampled together, so
the CI reflects the change on the same images; otherwise each run is resampled on its own.

A class **regressed** when its status got worse (pass -> warn -> flag; insufficient data
is not ranked), or when its accuracy or C fell or the swap gap grew with the difference's CI
clear of 0 by at least ``margin`` (accuracy and C: the CI's upper end below ``-margin``;
swap gap: its lower end above ``margin``). Accuracy counts because a class the model stopped
getting right often leaves too few images to judge: its status then falls out of the ranking
(insufficient data), and the comparison must not read that as no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from auditor.config import DetectConfig
from auditor.detect.behaviour import swap_gaps, swapped_rows
from auditor.detect.rule import neutral_classes
from auditor.detect.stats_util import finite
from auditor.errors import RunDirError

RANK = {"pass": 0, "warn": 1, "flag": 2}
KEY = ["image_id", "label"]

REGRESSION_MARGIN = 0.05
"""How far a change's CI must clear zero to be a regression, unless a command says otherwise."""


@dataclass(frozen=True)
class Judgement:
    """A class of a run as the comparison reads it: its output index and its status."""

    index: int
    name: str
    status: str


@dataclass(frozen=True)
class Side:
    """One run as the comparison reads it: its classes, methods (the primary one first
    choice of the comparison), per-sample rows and detect settings (for the donor choice of
    the swap gap)."""

    classes: list[Judgement]
    methods: list[str]
    primary: str
    samples: pd.DataFrame
    detect: DetectConfig
    data_sha256: str | None


@dataclass(frozen=True)
class Difference:
    before: float
    after: float
    change: float
    ci: tuple[float, float]
    n_before: int
    n_after: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": finite(self.before), "after": finite(self.after),
            "change": finite(self.change), "ci95": [finite(v) for v in self.ci],
            "n_before": self.n_before, "n_after": self.n_after,
        }  # fmt: skip


@dataclass(frozen=True)
class ClassChange:
    name: str
    status_before: str
    status_after: str
    accuracy: Difference
    c: Difference
    swap_gap: Difference | None
    regressions: tuple[str, ...]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status_before": self.status_before,
            "status_after": self.status_after, "accuracy": self.accuracy.to_dict(),
            "chance_corrected": self.c.to_dict(),
            "swap_gap": None if self.swap_gap is None else self.swap_gap.to_dict(),
            "regressed": self.regressed, "regressions": list(self.regressions),
        }  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    method: str
    paired: bool
    margin: float
    classes: list[ClassChange]
    only_before: list[str]
    only_after: list[str]

    @property
    def regressions(self) -> list[ClassChange]:
        return [c for c in self.classes if c.regressed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "paired": self.paired, "margin": self.margin,
            "regressed_classes": [c.name for c in self.regressions],
            "classes": [c.to_dict() for c in self.classes],
            "only_before": self.only_before, "only_after": self.only_after,
        }  # fmt: skip


def compare(
    before: Side,
    after: Side,
    *,
    margin: float = REGRESSION_MARGIN,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Class-by-class changes from ``before`` to ``after`` (see the module docstring)."""
    method = _common_method(before, after)
    paired = before.data_sha256 is not None and before.data_sha256 == after.data_sha256
    names_before = [c.name for c in before.classes]
    names_after = [c.name for c in after.classes]
    common = [n for n in names_after if n in names_before]
    rng = np.random.default_rng(seed)
    tools = (resamples, confidence, rng)
    changes = []
    for name in common:
        a, b = _class_side(before, name, method), _class_side(after, name, method)
        accuracy = _difference(a.correct, b.correct, paired, tools)
        c = _difference(a.c, b.c, paired, tools)
        gap = None
        if a.gaps is not None and b.gaps is not None and len(a.gaps) and len(b.gaps):
            gap = _difference(a.gaps, b.gaps, paired, tools)
        changes.append(ClassChange(
            name, a.status, b.status, accuracy, c, gap,
            _regressions(a.status, b.status, (accuracy, c, gap), margin),
        ))  # fmt: skip
    return Comparison(
        method, paired, margin, changes,
        only_before=[n for n in names_before if n not in names_after],
        only_after=[n for n in names_after if n not in names_before],
    )  # fmt: skip


@dataclass(frozen=True)
class _ClassRows:
    status: str
    correct: pd.Series  # indexed by KEY
    c: pd.Series
    gaps: pd.Series | None


def _class_side(side: Side, name: str, method: str) -> _ClassRows:
    entry = next(c for c in side.classes if c.name == name)
    label = entry.index
    rows = side.samples[side.samples["skip_reason"].isna() & (side.samples["label"] == label)]
    rows = rows.assign(image_id=rows["image_id"].astype(str))
    images = rows.drop_duplicates(KEY).set_index(KEY)
    mine = rows[rows["method"] == method].drop_duplicates(KEY).set_index(KEY)
    gaps = None
    if "pred_swapped" in rows and rows["donor_label"].notna().any():
        scored = side.samples[side.samples["skip_reason"].isna()]
        neutral = neutral_classes(scored, len(side.classes), side.detect)
        all_images = scored.drop_duplicates(["sample"])
        own = swapped_rows(all_images, label, neutral, side.detect).rows
        own = own.assign(image_id=own["image_id"].astype(str)).drop_duplicates(KEY)
        gaps = pd.Series(swap_gaps(own, label), index=pd.MultiIndex.from_frame(own[KEY]))
    return _ClassRows(
        status=entry.status,
        correct=images["correct"].astype(float),
        c=mine["chance_corrected"].astype(float).dropna(),
        gaps=gaps,
    )


def _difference(
    before: pd.Series, after: pd.Series, paired: bool, tools: tuple[int, float, Any]
) -> Difference:
    """after - before, with a percentile bootstrap CI: of the mean per-image change on the
    images both runs scored (paired), or of the difference of two independent means."""
    resamples, confidence, rng = tools
    if paired:
        both = pd.concat([before.rename("a"), after.rename("b")], axis=1, join="inner")
        values = (both["b"] - both["a"]).to_numpy(float)
        means = rng.choice(values, (resamples, values.size)).mean(1) if values.size > 1 else None
    else:
        a, b = before.to_numpy(float), after.to_numpy(float)
        means = (
            rng.choice(b, (resamples, b.size)).mean(1) - rng.choice(a, (resamples, a.size)).mean(1)
            if a.size > 1 and b.size > 1
            else None
        )
    ci = (float("nan"), float("nan"))
    if means is not None:
        tail = (1 - confidence) / 2
        low, high = np.quantile(means, [tail, 1 - tail])
        ci = (float(low), float(high))
    mean_a, mean_b = float(before.mean()), float(after.mean())
    return Difference(mean_a, mean_b, mean_b - mean_a, ci, len(before), len(after))


def _regressions(
    status_before: str,
    status_after: str,
    changes: tuple[Difference, Difference, Difference | None],
    margin: float,
) -> tuple[str, ...]:
    """The regressions among a class's changes (accuracy, C, swap gap; module docstring)."""
    accuracy, c, gap = changes
    found = []
    if status_before in RANK and status_after in RANK and RANK[status_after] > RANK[status_before]:
        found.append("status")
    if np.isfinite(accuracy.ci[1]) and accuracy.ci[1] < -margin:
        found.append("accuracy")
    if np.isfinite(c.ci[1]) and c.ci[1] < -margin:
        found.append("chance_corrected")
    if gap is not None and np.isfinite(gap.ci[0]) and gap.ci[0] > margin:
        found.append("swap_gap")
    return tuple(found)


def _common_method(before: Side, after: Side) -> str:
    """The after-run's primary method when the before-run audited it too, else the first
    method both audited."""
    shared = [m for m in after.methods if m in before.methods]
    if not shared:
        raise RunDirError(
            f"the two runs audited no method in common ({', '.join(before.methods)} "
            f"against {', '.join(after.methods)})."
        )
    return after.primary if after.primary in shared else shared[0]
