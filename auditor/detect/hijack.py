"""How one class's backgrounds act on the other classes' objects (numbers only; the rule's
findings are :mod:`auditor.detect.other_backgrounds`'s):

- **vulnerable**: does a class's object lose accuracy on one donor class's backgrounds,
  against backgrounds that carry no class's cue (:func:`vulnerability_tests`)?
- **hijack**: do a class's backgrounds move other classes' objects to it
  (:func:`hijack_test`, on the swapped rows; :mod:`auditor.detect.overlay` asks the same of
  its mean background drawn over the whole image)?
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pandas as pd
from scipy.stats import fisher_exact

from auditor.config import DetectConfig
from auditor.detect.behaviour import DonorCell, background_challenge, has_behaviour
from auditor.detect.stats_util import finite, newcombe


@dataclass(frozen=True)
class VulnerabilityTest:
    """Class ``label``'s accuracy on donor class ``donor``'s backgrounds against its accuracy
    on ``reference`` backgrounds (``neutral``: the neutral donor classes other than
    ``donor``; ``same_class``: its own class's, when too few neutral ones exist)."""

    donor: int
    cell: DonorCell
    reference: str
    reference_n: int
    reference_correct: int
    p: float
    drop_ci: tuple[float, float]

    @property
    def reference_accuracy(self) -> float:
        return self.reference_correct / self.reference_n

    @property
    def drop(self) -> float:
        return self.reference_accuracy - self.cell.accuracy


def vulnerability_tests(
    images: pd.DataFrame,
    label: int,
    neutral: Collection[int],
    config: DetectConfig,
    *,
    min_cell: int = 5,
) -> list[VulnerabilityTest]:
    """Per donor class of class ``label``: does the object lose accuracy on that class's
    backgrounds, compared with backgrounds that carry no class's cue? A one-sided Fisher test
    (unadjusted p; the rule adjusts across all cells) and the Newcombe CI of the drop. Cells
    and references need ``min_cell`` images."""
    challenge = background_challenge(images, label)
    if challenge is None:
        return []
    own = images[(images["label"] == label) & (images["donor_label"] >= 0)]
    tests = []
    for donor, cell in sorted(challenge.cells.items()):
        if donor == label or cell.n < min_cell:
            continue
        others = own[own["donor_label"].isin([c for c in neutral if c not in (donor, label)])]
        if len(others) >= min_cell:
            kind, hits, n = "neutral", int((others["pred_swapped"] == label).sum()), len(others)
        elif challenge.mixed_same.n >= min_cell:
            kind, hits, n = "same_class", challenge.mixed_same.correct, challenge.mixed_same.n
        else:
            continue
        table = [[hits, n - hits], [cell.correct, cell.n - cell.correct]]
        p = float(fisher_exact(table, alternative="greater").pvalue)
        ci = newcombe((hits, n), (cell.correct, cell.n), config.confidence)
        tests.append(VulnerabilityTest(donor, cell, kind, n, hits, p, ci))
    return tests


HIJACK_STATISTICS = {  # a hijack finding's statistic by (view, the reference that bound)
    ("swap", "background"): "other_objects_called_class_on_its_backgrounds",
    ("swap", "class"): "other_objects_called_class_on_its_backgrounds_more_than_on_others",
    ("overlay", "background"): "other_objects_called_class_under_its_mean_background",
    ("overlay", "class"): "other_objects_called_class_under_its_mean_background_more_than_others",
}


def hijack_view(statistic: str) -> tuple[str, str] | None:
    """``(view, pull)`` of a hijack finding's statistic (:data:`HIJACK_STATISTICS`); None for
    any other statistic."""
    return next((key for key, name in HIJACK_STATISTICS.items() if name == statistic), None)


@dataclass(frozen=True)
class HijackTest:
    """The other classes' objects, those the model got right, pasted onto class ``donor``'s
    backgrounds: ``called`` of ``n`` are called ``donor`` (the follow rate), against
    ``reference_called`` of ``reference_n`` other objects on backgrounds that carry no cue
    (neutral donor classes but ``donor``; every other donor when too few), counted the way
    that counts more (``pull``): ``"background"``, called *their* background's class (objects
    following every background are no evidence against one), or ``"class"``, called ``donor``
    anyway (a model giving this class to pasted objects on any background is no evidence
    against its backgrounds). ``p``: one-sided Fisher, unadjusted; ``ci``: Newcombe's CI.
    ``view``: ``"swap"`` (objects pasted onto the class's object-free backgrounds) or
    ``"overlay"`` (the class's mean background drawn over the whole image:
    :mod:`auditor.detect.overlay`)."""

    donor: int
    n: int
    called: int
    reference: str
    reference_n: int
    reference_called: int
    p: float
    ci: tuple[float, float]
    pull: str = "background"
    view: str = "swap"

    @property
    def follow_rate(self) -> float:
        return self.called / self.n

    @property
    def statistic(self) -> str:
        return HIJACK_STATISTICS[self.view, self.pull]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "p": finite(self.p),
                "ci": [finite(v) for v in self.ci]}  # fmt: skip

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> HijackTest:
        return cls(**{**stored, "ci": tuple(stored["ci"])})

    @property
    def reference_rate(self) -> float:
        return self.reference_called / self.reference_n


def hijack_test(
    images: pd.DataFrame,
    donor: int,
    neutral: Collection[int],
    config: DetectConfig,
    *,
    min_cell: int = 5,
) -> HijackTest | None:
    """Do class ``donor``'s backgrounds move other classes' objects (their swapped images) to
    ``donor``, more than the reference backgrounds do (:class:`HijackTest`)? None without
    the swap columns or with fewer than ``min_cell`` images on a side."""
    if not has_behaviour(images) or "donor_label" not in images:
        return None
    swapped = images[(images["label"] != donor) & (images["donor_label"] >= 0) & images["correct"]]
    swapped = swapped[swapped["donor_label"] != swapped["label"]]
    on_donor = swapped[swapped["donor_label"] == donor]
    elsewhere = swapped[swapped["donor_label"] != donor]
    neutral_rows = elsewhere[elsewhere["donor_label"].isin(list(neutral))]
    kind, reference = ("neutral", neutral_rows) if len(neutral_rows) >= min_cell else (
        "other", elsewhere)  # fmt: skip
    if min(len(on_donor), len(reference)) < min_cell:
        return None
    called = int((on_donor["pred_swapped"] == donor).sum())
    background = int((reference["pred_swapped"] == reference["donor_label"]).sum())
    anyway = int((reference["pred_swapped"] == donor).sum())
    return held_against(donor, (called, len(on_donor)), kind, len(reference), background, anyway,
                        config)  # fmt: skip


def held_against(
    donor: int,
    followed: tuple[int, int],
    kind: str,
    reference_n: int,
    background: int,
    anyway: int,
    config: DetectConfig,
    view: str = "swap",
) -> HijackTest:
    """A :class:`HijackTest` of ``followed`` = (called ``donor``, of n) against the
    ``reference_n`` reference images, of which ``background`` were called their background's
    class and ``anyway`` were called ``donor``: held against the larger (``pull``), by a
    one-sided Fisher test and Newcombe's CI of the difference."""
    called, n = followed
    pull = "class" if anyway > background else "background"
    ref_called = anyway if pull == "class" else background
    table = [[called, n - called], [ref_called, reference_n - ref_called]]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    ci = newcombe((called, n), (ref_called, reference_n), config.confidence)
    return HijackTest(donor, n, called, kind, reference_n, ref_called, p, ci, pull, view)
