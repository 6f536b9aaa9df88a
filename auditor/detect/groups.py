"""Group audits (``--group-by ATTR``): the per-class audit repeated inside each group of images
that share an attribute value, and the association between label and attribute in the data.

Each class x group cell gets the class rule (:func:`auditor.detect.rule.class_results` on
that group's images), so a cell with fewer than ``min_n`` images is insufficient data, never
pass, and a cell can be flagged while its class as a whole is not. Per attribute:

- worst-group accuracy and the best - worst gap (the Waterbirds convention), over the cells
  with at least ``min_n`` scored images;
- the dataset's bias, apart from the model: label x attribute counts, Cramér's V, and a
  chi-square test (Fisher's exact test for a 2 x 2 table).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from scipy.stats import chi2_contingency, fisher_exact

from auditor.config import DetectConfig
from auditor.detect.findings import ClassResult
from auditor.detect.rule import class_results
from auditor.detect.stats_util import finite


def group_column(attribute: str) -> str:
    """The ``samples.parquet`` column holding each image's value of ``attribute``."""
    return f"group.{attribute}"


@dataclass(frozen=True)
class Association:
    """Label x attribute in the data: images per class and value, and their dependence."""

    counts: dict[str, dict[str, int]]
    cramers_v: float
    p: float
    test: Literal["chi2", "fisher", "none"]

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "cramers_v": finite(self.cramers_v), "p": finite(self.p),
                "test": self.test}  # fmt: skip


@dataclass(frozen=True)
class GroupResult:
    """One attribute: a result per class x value, the worst and best judged cells, and the
    association between label and attribute."""

    attribute: str
    values: list[str]
    cells: list[tuple[str, ClassResult]]  # (value, the class's result inside that group)
    association: Association
    min_n: int

    def judged(self) -> list[tuple[str, ClassResult]]:
        return [(v, r) for v, r in self.cells if r.n >= self.min_n and math.isfinite(r.accuracy)]

    def worst(self) -> tuple[str, ClassResult] | None:
        judged = self.judged()
        return min(judged, key=lambda cell: cell[1].accuracy) if judged else None

    def best(self) -> tuple[str, ClassResult] | None:
        judged = self.judged()
        return max(judged, key=lambda cell: cell[1].accuracy) if judged else None

    def flagged(self) -> list[str]:
        return [f"{r.name} where {self.attribute} = {v}" for v, r in self.cells if r.flagged]

    def to_dict(self, primary: str) -> dict[str, Any]:
        worst, best = self.worst(), self.best()
        return {
            "attribute": self.attribute,
            "values": self.values,
            "worst_group": None if worst is None else _cell_ref(*worst),
            "best_group": None if best is None else _cell_ref(*best),
            "gap": None if worst is None or best is None
            else finite(best[1].accuracy - worst[1].accuracy),
            "association": self.association.to_dict(),
            "cells": [_cell(v, r, primary) for v, r in self.cells],
        }  # fmt: skip


def group_results(
    samples: pd.DataFrame,
    class_names: Sequence[str],
    methods: Sequence[str],
    config: DetectConfig,
    attribute: str,
    *,
    untrusted: Mapping[str, str] | None = None,
    donors: Collection[int] | None = None,
) -> GroupResult:
    """The class rule inside each group of ``attribute`` (column :func:`group_column`)."""
    column = group_column(attribute)
    values = sorted(str(v) for v in samples[column].unique())
    cells = []
    for value in values:
        inside = samples[samples[column] == value]
        results = class_results(
            inside, class_names, methods, config, untrusted=untrusted, donors=donors
        )
        cells += [(value, r) for r in results if r.n > 0]
    association = label_association(samples, class_names, column)
    return GroupResult(attribute, values, cells, association, config.min_n)


def label_association(
    samples: pd.DataFrame, class_names: Sequence[str], column: str
) -> Association:
    """Counts of scored images per class and value, Cramér's V and the test's p."""
    images = samples[samples["skip_reason"].isna()].drop_duplicates("sample")
    table = pd.crosstab(images["label"], images[column])
    counts = {
        class_names[int(label)]: {str(v): int(n) for v, n in row.items()}
        for label, row in table.iterrows()
    }
    if min(table.shape) < 2:
        return Association(counts, float("nan"), float("nan"), "none")
    observed = table.to_numpy()
    chi2, p, _, _ = chi2_contingency(observed, correction=False)
    v = math.sqrt(chi2 / (observed.sum() * (min(observed.shape) - 1)))
    if observed.shape == (2, 2):
        return Association(counts, v, float(fisher_exact(observed).pvalue), "fisher")
    return Association(counts, v, float(p), "chi2")


def _cell_ref(value: str, r: ClassResult) -> dict[str, Any]:
    return {"class": r.name, "value": value, "n": r.n, "accuracy": finite(r.accuracy)}


def _cell(value: str, r: ClassResult, primary: str) -> dict[str, Any]:
    stats = r.metrics.get(primary)
    behaviour = r.behaviour
    return {
        "class": r.name,
        "index": r.index,
        "value": value,
        "n": r.n,
        "accuracy": finite(r.accuracy),
        "status": r.status,
        "findings": [f.to_dict() for f in r.findings],
        "chance_corrected": None if stats is None else finite(stats.mean),
        "ci95": None if stats is None else [finite(stats.ci_low), finite(stats.ci_high)],
        "swap_gap": None if behaviour is None else finite(behaviour.swap_gap),
        "swap_gap_ci95": None if behaviour is None else [finite(v) for v in behaviour.swap_gap_ci],
        "behaviour": None if behaviour is None else behaviour.to_dict(),
    }
