"""``summary.json`` as types: the verdict, the dataset's counts and every class's results,
findings, statistics and words. :func:`read_summary` is the only reader of the file's
contents; every report, comparison, history row and terminal line reads these attributes, so
a field is named in one place and a damaged file fails here, in one line.

Schema versions: 1 (every run so far; later fields were added with defaults, so a run of an
earlier release loads with them unset) is the current one; a newer one is refused, never
guessed at."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from auditor.record.parse import RecordError, from_dict, to_dict

SCHEMA_VERSION = 1
Verdict = Literal["pass", "warn", "fail"]
Status = Literal["pass", "warn", "flag", "insufficient_data"]
Number = float | None
"""A statistic: None where it is undefined (NaN is stored as null)."""


def pair(values: list[Number] | None) -> tuple[Number, Number]:
    """A stored interval (``ci95``) as (low, high); (None, None) where there is none."""
    if values is None or len(values) != 2:
        return None, None
    return values[0], values[1]


def _key(name: str, **more: Any) -> Any:
    """A field stored under another JSON key (``class``, a Python word)."""
    return field(metadata={"key": name}, **more)


@dataclass(frozen=True, kw_only=True)
class ModelRef:
    spec: str
    sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class SharedFile:
    file_name: str
    image_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class SharedFiles:
    n: int = 0
    examples: list[SharedFile] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class DatasetRecord:
    spec: str
    n_images: int
    n_skipped: int
    sha256: str | None = None
    n_scored: int | None = None  # None: a run from before it was stored
    n_unscored: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_fraction: Number = None
    max_skipped: float = 0.5
    skip_limit_exceeded: bool = False
    shared_files: SharedFiles = field(default_factory=SharedFiles)

    @property
    def scored(self) -> int:
        return self.n_images - self.n_skipped if self.n_scored is None else self.n_scored


@dataclass(frozen=True, kw_only=True)
class FindingRecord:
    """One piece of evidence (see :class:`auditor.detect.rule.Finding`)."""

    kind: str
    statistic: str
    value: Number
    threshold: float
    n: int
    method: str | None = None
    ci95: list[Number] | None = None
    p: Number = None
    effect_size: Number = None
    reference: Number = None
    reference_class: int | None = None
    neutral_donors: bool | None = None
    location: list[float] | None = field(default=None, metadata={"omit_none": True})
    follow_rate: Number = field(default=None, metadata={"omit_none": True})
    intervention: str | None = field(default=None, metadata={"omit_none": True})
    untrusted: str | None = field(default=None, metadata={"omit_none": True})
    taken_over: int | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True, kw_only=True)
class Outcome:
    n: int
    chance_corrected: Number = None


@dataclass(frozen=True, kw_only=True)
class MetricsRecord:
    """A method's statistics of C on a class (see :class:`auditor.detect.stats.MethodStats`)."""

    n: int
    chance_corrected: Number = None
    median: Number = None
    ci95: list[Number] = field(default_factory=lambda: [None, None])
    p_below: Number = None
    p_adjusted: Number = None
    effect_size: Number = None
    by_outcome: dict[str, Outcome] = field(default_factory=dict)
    means: dict[str, Number] = field(default_factory=dict)
    vs_other_classes: VsOthersRecord | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True, kw_only=True)
class VsOthersRecord:
    """A class's C against the other classes' (see :class:`auditor.detect.stats.VsOthers`)."""

    difference: Number = None
    ci95: list[Number] = field(default_factory=lambda: [None, None])
    effect_size: Number = None
    p_adjusted: Number = None
    others: Number = None


@dataclass(frozen=True, kw_only=True)
class BehaviourRecord:
    """A class's interventions (see :class:`auditor.detect.behaviour.BehaviourStats`)."""

    n: int
    swap_gap: Number = None
    swap_gap_ci95: list[Number] = field(default_factory=lambda: [None, None])
    intervened: int | None = None
    accuracy_swapped: Number = None
    follow_rate: Number = None
    neutral_donors: bool | None = None
    taken_over: int | None = None
    background_only_accuracy: Number = None
    background_only_baseline: Number = None
    background_only_baseline_class: int | None = None
    background_only_p: Number = None
    background_only_chance: Number = None
    background_only_binomial_p: Number = None
    interventions: dict[str, DropRecord] | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True, kw_only=True)
class DropRecord:
    """Accuracy lost under an extra intervention (see :class:`auditor.detect.behaviour.Drop`)."""

    n: int
    accuracy: Number = None
    gap: Number = None
    gap_ci95: list[Number] = field(default_factory=lambda: [None, None])


@dataclass(frozen=True, kw_only=True)
class DonorCellRecord:
    n: int
    accuracy: Number = None
    called_background_class: Number = None


@dataclass(frozen=True, kw_only=True)
class ChallengeRecord:
    """A class's Backgrounds Challenge quantities, by donor class name."""

    mixed_same_accuracy: Number = None
    mixed_same_n: int = 0
    mixed_rand_accuracy: Number = None
    mixed_rand_n: int = 0
    bg_gap: Number = None
    by_background_class: dict[str, DonorCellRecord] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Judged:
    """What the class rule says of a class, a class x group cell or a subgroup."""

    status: Status
    n: int
    accuracy: Number = None
    findings: list[FindingRecord] = field(default_factory=list)
    behaviour: BehaviourRecord | None = None
    reasons: list[str] = field(default_factory=list)
    notes: list[FindingRecord] = field(default_factory=list)
    noted: list[str] = field(default_factory=list)  # the notes in words

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}


@dataclass(frozen=True, kw_only=True)
class SubgroupRecord(Judged):
    class_name: str = _key("class")
    index: int
    subgroup: int
    of: int
    method: str
    metrics: dict[str, MetricsRecord] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ClassRecord(Judged):
    index: int
    name: str
    flagged: bool = False
    metrics: dict[str, MetricsRecord] = field(default_factory=dict)
    swap_metrics: dict[str, MetricsRecord] = field(default_factory=dict)
    hotspots: dict[str, dict[str, Any]] = field(default_factory=dict)
    background_challenge: ChallengeRecord | None = field(default=None, metadata={"omit_none": True})
    overlay_hijack: dict[str, Any] | None = field(default=None, metadata={"omit_none": True})
    subgroups: list[SubgroupRecord] = field(default_factory=list)

    def metric(self, method: str, value: str = "chance_corrected") -> Number:
        """A statistic of a method's C (None where the method has none)."""
        stats = self.metrics.get(method)
        return None if stats is None else getattr(stats, value)


@dataclass(frozen=True, kw_only=True)
class CellRef:
    class_name: str = _key("class")
    value: str
    n: int
    accuracy: Number = None


@dataclass(frozen=True, kw_only=True)
class GroupCell(Judged):
    class_name: str = _key("class")
    index: int
    value: str
    chance_corrected: Number = None
    ci95: list[Number] | None = None
    swap_gap: Number = None
    swap_gap_ci95: list[Number] | None = None


@dataclass(frozen=True, kw_only=True)
class Association:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    cramers_v: Number = None
    p: Number = None
    test: str = "none"


@dataclass(frozen=True, kw_only=True)
class GroupRecord:
    attribute: str
    values: list[str] = field(default_factory=list)
    worst_group: CellRef | None = None
    best_group: CellRef | None = None
    gap: Number = None
    association: Association = field(default_factory=Association)
    cells: list[GroupCell] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ChallengeTable:
    """The Backgrounds Challenge over all classes, and the class x background-class table."""

    mixed_same_accuracy: Number = None
    mixed_rand_accuracy: Number = None
    bg_gap: Number = None
    classes: list[str] = field(default_factory=list)
    accuracy: list[list[Number]] = field(default_factory=list)
    n: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Trust:
    untrusted: dict[str, str] = field(default_factory=dict)
    randomization_similarity: dict[str, Number] = field(default_factory=dict)
    object_side_px: Number = None
    partial: dict[str, str] = field(default_factory=dict)
    faithfulness: dict[str, FaithfulnessRecord] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FaithfulnessRecord:
    """A method's ROAD against random maps (:class:`auditor.detect.faithfulness.Faithfulness`)."""

    n: int
    road: Number = None
    random_road: Number = None
    difference: Number = None
    ci95: list[Number] = field(default_factory=lambda: [None, None])
    p: Number = None
    faithful: bool = False


@dataclass(frozen=True, kw_only=True)
class HistoryNote:
    """Why the run is not in the run history."""

    path: str
    error: str


@dataclass(frozen=True, kw_only=True)
class Summary:
    """``summary.json``."""

    verdict: Verdict
    flagged_classes: list[str]
    model: ModelRef
    dataset: DatasetRecord
    methods: list[str]
    classes: list[ClassRecord]
    schema_version: int = SCHEMA_VERSION
    auditor_version: str = "?"
    noted_classes: list[str] = field(default_factory=list)  # classes with notes
    primary_method: str = ""  # "" for a run from before it was stored: see read_summary
    background_challenge: ChallengeTable | None = None
    flagged_groups: list[str] = field(default_factory=list)
    flagged_subgroups: list[str] = field(default_factory=list)
    groups: list[GroupRecord] = field(default_factory=list)
    trust: Trust = field(default_factory=Trust)
    method_errors: dict[str, str] = field(default_factory=dict)
    since_previous: dict[str, Any] | None = field(default=None, metadata={"omit_none": True})
    history: HistoryNote | None = field(default=None, metadata={"omit_none": True})
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def untrusted(self) -> dict[str, str]:
        return self.trust.untrusted

    def to_dict(self) -> dict[str, Any]:
        return dict(to_dict(self))

    def replace(self, **changes: Any) -> Summary:
        return dataclasses.replace(self, **changes)


def read_summary(value: Any) -> Summary:
    """A :class:`Summary` from ``summary.json``'s parsed JSON; :class:`RecordError` naming
    the field that is damaged or missing. A run of an earlier release gets what it lacks
    (its primary method: the first audited)."""
    version = value.get("schema_version", 1) if isinstance(value, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise RecordError(
            "schema_version", f"is {version}: written by a newer auditor (this one reads up "
            f"to {SCHEMA_VERSION}); upgrade auditor to read it",
        )  # fmt: skip
    summary = from_dict(Summary, value, "")
    if not summary.methods:
        raise RecordError("methods", "must name at least one method")
    if not summary.primary_method:
        summary = summary.replace(primary_method=summary.methods[0])
    return summary
