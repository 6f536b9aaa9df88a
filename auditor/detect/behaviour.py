"""Per-class statistics of the intervention predictions stored in ``samples`` (numbers only;
:mod:`auditor.detect.rule` decides what they mean).

Two questions, in order:

1. Does the background alone identify the class? With the object removed, class ``c``'s
   images must be predicted ``c`` more often than the images of *every* other class are
   (one-sided Fisher test against the other class with the highest rate). Comparing with
   the pooled other classes instead would let a default "nothing here" prediction, shared
   by several classes' backgrounds, pass for a cue.
2. Does the class lose accuracy when its background is swapped? Donor backgrounds come
   from classes whose backgrounds do not identify their own class (step 1), so a donor that
   carries another class's shortcut cannot hijack the prediction and pass as reliance.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import binomtest, fisher_exact

from auditor.config import DetectConfig
from auditor.detect.stats_util import bootstrap_ci, finite, newcombe
from auditor.detect.views import of_statistic


@dataclass(frozen=True)
class Identification:
    """How often the background alone gives the class, against the most similar class
    (``p``, which decides) and against chance, 1/K (``p_chance``, a one-sided binomial test,
    reported as the ImageNet-9 Backgrounds Challenge does)."""

    rate: float
    baseline: float
    baseline_class: int
    p: float
    p_chance: float = float("nan")
    chance: float = float("nan")
    lift_ci: tuple[float, float] = (float("nan"), float("nan"))  # Newcombe, rate - baseline


@dataclass(frozen=True)
class Drop:
    """A class's accuracy lost under one intervention (:mod:`auditor.detect.views`'s
    ``accuracy_drop`` statistic): over its ``n`` images that got the view and an answer, the
    mean of (right before) - (right after), with its bootstrap CI."""

    n: int
    accuracy: float  # on the view
    gap: float
    ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "accuracy": finite(self.accuracy), "gap": finite(self.gap),
                "gap_ci95": [finite(v) for v in self.ci]}  # fmt: skip


@dataclass(frozen=True)
class BehaviourStats:
    n: int
    accuracy_swapped: float
    swap_gap: float
    swap_gap_ci: tuple[float, float]
    follow_rate: float
    neutral_donors: bool
    background_only: Identification
    intervened: int = 0  # the class's images that got the interventions (all, or a sample)
    drops: dict[str, Drop] = field(default_factory=dict)  # by extra intervention
    taken_over: int = 0  # swaps left out: a donor's cue took the object over (swapped_rows)

    def to_dict(self) -> dict[str, Any]:
        ident = self.background_only
        drops = {"interventions": {k: d.to_dict() for k, d in self.drops.items()}}
        return {
            "n": self.n,
            "intervened": self.intervened,
            "accuracy_swapped": finite(self.accuracy_swapped),
            "swap_gap": finite(self.swap_gap),
            "swap_gap_ci95": [finite(v) for v in self.swap_gap_ci],
            "follow_rate": finite(self.follow_rate),
            "neutral_donors": self.neutral_donors,
            "taken_over": self.taken_over,
            "background_only_accuracy": finite(ident.rate),
            "background_only_baseline": finite(ident.baseline),
            "background_only_baseline_class": ident.baseline_class,
            "background_only_p": finite(ident.p),
            "background_only_chance": finite(ident.chance),
            "background_only_binomial_p": finite(ident.p_chance),
            **(drops if self.drops else {}),
        }


def has_behaviour(images: pd.DataFrame) -> bool:
    return "pred_swapped" in images and not images["pred_swapped"].isna().all()


def identification(
    images: pd.DataFrame, label: int, k: int, confidence: float = 0.95
) -> Identification:
    """``images``: one row per scored image, with ``pred_background_only`` (missing for the
    images outside the intervention sample: they are not counted)."""
    images = images[images["pred_background_only"].notna()]
    hits = (images["pred_background_only"] == label).groupby(images["label"]).agg(["sum", "count"])
    if label not in hits.index or k < 2:
        return Identification(float("nan"), float("nan"), -1, float("nan"))
    own_hits, own_n = (int(v) for v in hits.loc[label])
    p_chance = float(binomtest(own_hits, own_n, 1 / k, alternative="greater").pvalue)
    others = hits.drop(index=label)
    if others.empty:
        return Identification(own_hits / own_n, float("nan"), -1, float("nan"), p_chance, 1 / k)
    rates = others["sum"] / others["count"]
    top = int(rates.idxmax())
    other_hits, other_n = (int(v) for v in others.loc[top])
    table = [[own_hits, own_n - own_hits], [other_hits, other_n - other_hits]]
    p = float(fisher_exact(table, alternative="greater").pvalue)
    lift = newcombe((own_hits, own_n), (other_hits, other_n), confidence)
    return Identification(own_hits / own_n, other_hits / other_n, top, p, p_chance, 1 / k, lift)


class Swaps(NamedTuple):
    """The swapped images of a class that count (:func:`swapped_rows`)."""

    rows: pd.DataFrame
    neutral_donors: bool  # every row's donor is neutral
    taken_over: int = 0  # left out: a cued donor took the object over


def swapped_rows(
    images: pd.DataFrame,
    label: int,
    neutral: Collection[int],
    config: DetectConfig,
    *,
    neutral_only: bool = False,
) -> Swaps:
    """The images of class ``label`` whose swap counts, and whether their donors are neutral:
    donors from ``neutral`` classes (all donors when too few come from neutral classes,
    unless ``neutral_only``: the donor choice of the whole class, kept for a part of it).

    With all donors, a class that is itself neutral (its background alone identifies no
    class) leaves out the images a donor's cue took over (called the donor's class, whose
    background identifies it): they measure that donor's hijack, this class's
    ``vulnerable`` note, not its own need of its background. A class with a cue of its own
    keeps them: whether it needs its background or the donor's takes it over, the swap
    cannot tell (two classes on their own backgrounds, as in Waterbirds)."""
    own = images[(images["label"] == label) & (images["donor_label"] >= 0)]
    from_cue = ~own["donor_label"].isin(list(neutral))
    use_neutral = neutral_only or int((~from_cue).sum()) >= min(config.min_n, max(len(own), 1))
    if use_neutral:
        return Swaps(own[~from_cue], True)
    if label not in neutral:
        return Swaps(own, False)
    taken = from_cue & (own["pred_swapped"] == own["donor_label"])
    return Swaps(own[~taken], False, int(taken.sum()))


def swap_gaps(rows: pd.DataFrame, label: int) -> np.ndarray:
    """Per image: right before the swap (1/0) minus right after it; the mean is the gap."""
    correct = rows["correct"].to_numpy(dtype=float)
    return correct - (rows["pred_swapped"] == label).to_numpy(dtype=float)


def behaviour_stats(
    images: pd.DataFrame,
    label: int,
    ident: Identification,
    neutral: Collection[int],
    config: DetectConfig,
    rng: np.random.Generator,
    *,
    neutral_only: bool = False,
) -> BehaviourStats | None:
    """Swap statistics of class ``label`` over :func:`swapped_rows`."""
    swaps = swapped_rows(images, label, neutral, config, neutral_only=neutral_only)
    own = swaps.rows
    if own.empty:
        return None
    gaps = swap_gaps(own, label)
    correct_swapped = (own["pred_swapped"] == label).to_numpy(dtype=float)
    low, high = bootstrap_ci(
        gaps, resamples=config.bootstrap, confidence=config.confidence, rng=rng
    )
    return BehaviourStats(
        n=len(own),
        accuracy_swapped=float(correct_swapped.mean()),
        swap_gap=float(gaps.mean()),
        swap_gap_ci=(low, high),
        follow_rate=float((own["pred_swapped"] == own["donor_label"]).mean()),
        neutral_donors=swaps.neutral_donors,
        background_only=ident,
        intervened=int(((images["label"] == label) & images["pred_background_only"].notna()).sum()),
        taken_over=swaps.taken_over,
        drops={
            i.name: drop
            for i in of_statistic("accuracy_drop", images.columns)
            if (drop := accuracy_drop(images, label, i.prediction, config, rng)) is not None
        },
    )


def accuracy_drop(
    images: pd.DataFrame, label: int, column: str, config: DetectConfig, rng: np.random.Generator
) -> Drop | None:
    """Class ``label``'s accuracy lost when its images are replaced by the view whose
    predictions are in ``column`` (images without an answer there are not counted)."""
    own = images[(images["label"] == label) & images[column].notna() & (images[column] >= 0)]
    if own.empty:
        return None
    after = (own[column] == label).to_numpy(dtype=float)
    gaps = own["correct"].to_numpy(dtype=float) - after
    ci = bootstrap_ci(gaps, resamples=config.bootstrap, confidence=config.confidence, rng=rng)
    return Drop(len(own), float(after.mean()), float(gaps.mean()), ci)


@dataclass(frozen=True)
class DonorCell:
    """A class's objects on the backgrounds of one donor class: ``n`` images, ``correct``
    still called the class, ``called_donor`` called the donor's class."""

    donor: int
    n: int
    correct: int
    called_donor: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


@dataclass(frozen=True)
class BackgroundChallenge:
    """The ImageNet-9 Backgrounds Challenge quantities of one class (Xiao et al. 2021), as
    accuracies over all its images (right or wrong before the swap):

    - Mixed-Same: the object on the background of another image of its own class;
    - Mixed-Rand: the object on the background of an image of another class (ImageNet-9
      draws from all classes, its own included one time in K; here always another);
    - BG-Gap: Mixed-Same - Mixed-Rand;
    - ``cells``: accuracy per donor class (the class's row of the class x background-class
      table; its own class is the Mixed-Same cell).
    """

    mixed_same: DonorCell
    mixed_rand: DonorCell
    cells: dict[int, DonorCell]

    @property
    def bg_gap(self) -> float:
        return self.mixed_same.accuracy - self.mixed_rand.accuracy

    def to_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        return {
            "mixed_same_accuracy": finite(self.mixed_same.accuracy),
            "mixed_same_n": self.mixed_same.n,
            "mixed_rand_accuracy": finite(self.mixed_rand.accuracy),
            "mixed_rand_n": self.mixed_rand.n,
            "bg_gap": finite(self.bg_gap),
            "by_background_class": {
                class_names[d]: {
                    "n": cell.n,
                    "accuracy": finite(cell.accuracy),
                    "called_background_class": finite(cell.called_donor / cell.n)
                    if cell.n
                    else None,
                }
                for d, cell in sorted(self.cells.items())
            },
        }


def _cell(rows: pd.DataFrame, column: str, label: int, donor: int) -> DonorCell:
    predicted = rows[column].to_numpy()
    return DonorCell(
        donor, len(rows), int((predicted == label).sum()), int((predicted == donor).sum())
    )


def background_challenge(images: pd.DataFrame, label: int) -> BackgroundChallenge | None:
    """Mixed-Same, Mixed-Rand and the per-donor-class cells of class ``label``; None without
    the intervention columns (``pred_same_class``, ``pred_swapped``, ``donor_label``)."""
    if not {"pred_same_class", "donor_label"} <= set(images) or not has_behaviour(images):
        return None
    own = images[images["label"] == label]
    same = own[own["pred_same_class"] >= 0]
    rand = own[own["donor_label"] >= 0]
    cells = {
        int(d): _cell(rows, "pred_swapped", label, int(d))
        for d, rows in rand.groupby("donor_label")
    }
    if len(same):
        cells[label] = _cell(same, "pred_same_class", label, label)
    return BackgroundChallenge(
        _cell(same, "pred_same_class", label, label), _cell(rand, "pred_swapped", label, -1), cells
    )
