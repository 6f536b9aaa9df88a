"""The interventions as a registry: one :class:`Intervention` entry per view says how the
view is made from an image and its mask (and, for a swap, a donor's object-free background),
which statistic its predictions feed, what counts as evidence of reliance, and its words.

The core three run in every audit: the object on another class's background (the swap gap,
against donors whose backgrounds identify no class), the background alone (does it identify
the class?) and the object on another background of its own class (Mixed-Same, the control
of the Backgrounds Challenge). Entries marked ``core=False`` run when the audit names them
(``extra_interventions``); each feeds the generic accuracy drop (the class's accuracy on its
intervened images, before against after), whose finding is ``intervention_gap``.

A new intervention is one entry here plus its test: the samples' columns
(``pred_<name>``, ``prob_label_<name>``), the statistics, the rule (two distinct
interventions that agree flag a class on their own) and the report's words follow it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from auditor.detect.interventions import (
    DonorPool,
    background_only,
    blur_background,
    flat_background,
    swap_background,
)
from auditor.errors import ConfigError

Statistic = Literal["swap_gap", "identification", "challenge", "accuracy_drop"]
Donor = Literal["other_class", "same_class"]
View = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class Intervention:
    """One view of an image, built from its mask.

    ``make(inputs, masks, backgrounds)`` returns the view (``backgrounds``: the donors'
    object-free backgrounds when ``donor`` names a kind, else None). ``statistic`` is what
    its predictions feed; ``evidence`` the finding kind they can raise (None: a control).
    ``label`` is its name in tables, ``sentence`` what it does, for the method section."""

    name: str
    label: str
    sentence: str
    make: View
    statistic: Statistic
    evidence: str | None
    donor: Donor | None = None
    core: bool = False

    @property
    def prediction(self) -> str:
        """The samples column of the prediction on this view (-1: no donor; None: the image
        is outside the intervention sample or its view has no finite logits)."""
        return f"pred_{self.name}"

    @property
    def probability(self) -> str:
        """The samples column of the labelled class's probability on this view."""
        return f"prob_label_{self.name}"


REGISTRY: tuple[Intervention, ...] = (
    Intervention(
        "swapped", "another class's background",
        "the object pasted onto the object-free background of an image of another class",
        lambda x, m, bg: swap_background(x, m, _given(bg)),
        "swap_gap", "swap_gap", donor="other_class", core=True,
    ),
    Intervention(
        "background_only", "background only",
        "the object removed, its box filled with the surrounding background texture",
        lambda x, m, bg: background_only(x, m),
        "identification", "background_only", core=True,
    ),
    Intervention(
        "same_class", "own class's background",
        "the object pasted onto the background of another image of its own class",
        lambda x, m, bg: swap_background(x, m, _given(bg)),
        "challenge", None, donor="same_class", core=True,
    ),
    Intervention(
        "blurred", "blurred background",
        "the object on a blurred copy of its own background (Gaussian, sigma 4% of the side)",
        lambda x, m, bg: blur_background(x, m),
        "accuracy_drop", "intervention_gap",
    ),
    Intervention(
        "flat", "flat background",
        "the object on a flat fill of its own background's mean colour",
        lambda x, m, bg: flat_background(x, m),
        "accuracy_drop", "intervention_gap",
    ),
)  # fmt: skip
"""Every intervention auditor knows, the core ones first, in the order they run."""

CORE = tuple(i for i in REGISTRY if i.core)


def _given(backgrounds: torch.Tensor | None) -> torch.Tensor:
    assert backgrounds is not None, "a swap needs its donors' backgrounds"
    return backgrounds


def named(name: str) -> Intervention:
    """The registry entry called ``name``."""
    for entry in REGISTRY:
        if entry.name == name:
            return entry
    raise KeyError(name)


def active(extra: Iterable[str] = ()) -> tuple[Intervention, ...]:
    """The core interventions and the ``extra`` ones named (a :class:`ConfigError` in one line
    for a name the registry does not know or a core one), in registry order."""
    extra = tuple(extra)
    optional = [i.name for i in REGISTRY if not i.core]
    unknown = [n for n in extra if n not in optional]
    if unknown:
        raise ConfigError(
            f"extra_interventions: unknown {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(optional) or 'none'}"
        )
    return tuple(i for i in REGISTRY if i.core or i.name in extra)


def columns(interventions: Sequence[Intervention]) -> list[str]:
    """The samples columns of ``interventions``: the core ones' in their historic order
    (pred_swapped, donor_label, ...), then each further entry's prediction and probability."""
    core = ["pred_swapped", "donor_label", "pred_background_only", "pred_same_class",
            "prob_label", "prob_label_swapped", "prob_label_background_only",
            "prob_label_same_class"]  # fmt: skip
    extra = [c for i in interventions if not i.core for c in (i.prediction, i.probability)]
    return core + extra


def of_statistic(statistic: Statistic, present: Iterable[str]) -> list[Intervention]:
    """The registry entries feeding ``statistic`` whose prediction column is ``present``."""
    present = set(present)
    return [i for i in REGISTRY if i.statistic == statistic and i.prediction in present]


@dataclass(frozen=True)
class Behaviour:
    """Predictions under each intervention (by name; Tensor[N] of class indices, -1 where
    no donor exists or the view's logits were not finite), the labelled class's probability
    under each (Tensor[N], NaN likewise), the donor class of the other-class swap (-1: none),
    and the swapped images themselves (Tensor[N, C, H, W]), so that the predictions the swap
    changed can be explained on the images that changed them."""

    predictions: dict[str, torch.Tensor]
    label_probability: dict[str, torch.Tensor]
    donor_labels: torch.Tensor
    swapped_inputs: torch.Tensor

    @property
    def swapped(self) -> torch.Tensor:
        return self.predictions["swapped"]

    def broken(self, targets: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """Samples predicted right whose background swap made the prediction wrong: the
        ones the swap gap counts (Tensor[N] bool)."""
        return (predictions == targets) & (self.swapped >= 0) & (self.swapped != targets)

    def columns(self) -> dict[str, list[Any]]:
        """Per-image values of the samples columns (a view without donors has no -1: a
        missing answer there is None)."""
        out: dict[str, list[Any]] = {}
        for name, predicted in self.predictions.items():
            entry = named(name)
            values = predicted.tolist()
            missing = [None if p < 0 else p for p in values]
            out[entry.prediction] = values if entry.donor else missing
            if name == "swapped":
                out["donor_label"] = self.donor_labels.tolist()
        for name, probability in self.label_probability.items():
            out[named(name).probability] = probability.tolist()
        return out


@torch.no_grad()
def behaviour(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    masks: torch.Tensor,
    targets: torch.Tensor,
    keys: torch.Tensor,
    pool: DonorPool,
    interventions: Sequence[Intervention] = CORE,
) -> Behaviour:
    """Predictions on the ``interventions`` of a batch (the swap must be among them)."""
    labels, positions = targets.cpu(), keys.cpu()
    predictions, probabilities = {}, {}
    donor_labels, swapped_inputs = torch.full_like(labels, -1), inputs[:0]
    for entry in interventions:
        backgrounds, donors = None, torch.zeros_like(labels)  # no donor needed: all answer
        if entry.donor is not None:
            same = entry.donor == "same_class"
            backgrounds, donors = pool.pick(labels, positions, same_class=same)
            backgrounds = backgrounds.to(inputs.device)
        has_donor = donors >= 0
        view = entry.make(inputs, masks, backgrounds)
        # one forward per view at the caller's batch size: a tripled batch costs more per
        # image on the CPU (resnet50, 224 px: 16.9 s for 96 images against 3 x 4.7 s for 32)
        logits = model(view).float()
        # a view whose logits are not finite has no prediction: it counts as not intervened
        answered = has_donor.to(inputs.device) & logits.isfinite().all(1)
        predictions[entry.name] = torch.where(answered, logits.argmax(1), -1)
        probability = logits.softmax(1).gather(1, targets[:, None])[:, 0]
        probabilities[entry.name] = torch.where(answered, probability, torch.nan)
        if entry.name == "swapped":
            donor_labels = torch.where(answered.cpu(), donors, -1).to(inputs.device)
            swapped_inputs = view
    return Behaviour(predictions, probabilities, donor_labels, swapped_inputs)
