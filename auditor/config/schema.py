"""The settings of an audit: frozen dataclasses whose fields each carry what they mean, their
command-line option and their range (:func:`~auditor.config.settings.setting`), checked once
on construction (:func:`~auditor.config.checks.check_settings`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from auditor.attribution.engine import METHODS as KNOWN_METHODS
from auditor.attribution.precision import Precision
from auditor.config.checks import check_settings
from auditor.config.settings import setting
from auditor.data.labels import LabelPolicy
from auditor.data.transforms import parse_normalize
from auditor.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the per-class flag rule (``[detect]`` in audit.toml). What each one
    decides is said in :mod:`auditor.detect.rule` and in the documentation's "How a class is
    judged" (``docs/judging.md``)."""

    min_n: int = setting(
        20, "Fewest scored images a class is judged on; fewer gives insufficient_data.", low=2
    )
    max_chance_corrected: float = setting(
        0.0, "Saliency evidence: CI of mean chance-corrected energy below.", low=-1, high=1
    )
    min_gap: float = setting(
        0.1, "Behavioural evidence: the least accuracy a background swap must cost.", low=0,
        high=1,
    )  # fmt: skip
    alpha: float = setting(
        0.05, "Level of the one-sided Fisher test of background-only predictions.", low=0,
        high=1, open=True,
    )  # fmt: skip
    q: float = setting(
        0.05, "False discovery rate of the Benjamini-Hochberg adjustment across classes.",
        low=0, high=1, open=True,
    )  # fmt: skip
    sanity_samples: int = setting(
        16, "Images of the model-randomisation check of each method's maps.", low=0
    )
    sanity_max_similarity: float = setting(
        0.5, "Above this Spearman similarity a method drives no flag.", low=-1, high=1
    )
    min_effect_vs_class: float = setting(
        0.5, "Least Cohen's d of a subgroup's maps against its class's.", low=0
    )
    min_effect_vs_others: float = setting(
        0.5, "Least Cohen's d of a class's maps below the other classes' to sit off the object.",
        low=0,
    )  # fmt: skip
    max_survival_gap: float = setting(
        0.25, "A class survives other backgrounds when its swap gap's CI ends below this.",
        low=0, high=1,
    )  # fmt: skip
    faithfulness_samples: int = setting(
        16, "Images of each method's ROAD faithfulness check against a random map; 0: off.",
        low=0,
    )  # fmt: skip
    min_hotspot_superiority: float = setting(
        0.64, "Least chance a class's image draws more to its hotspot than another class's "
        "does (0.5: none).", low=0.5, high=1,
    )  # fmt: skip
    bootstrap: int = setting(2000, "Bootstrap resamples of each confidence interval.", low=100)
    confidence: float = setting(
        0.95, "Confidence level of the intervals (0.95: 95% CIs).", low=0.5, high=1, open=True
    )
    seed: int = setting(
        0, "Seed of the bootstraps and samples: the same inputs give the same results."
    )

    def __post_init__(self) -> None:
        check_settings(self, prefix="detect.")


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit run needs besides the model and the data."""

    methods: tuple[str, ...] = setting(
        ("gradcam", "saliency"),
        "Attribution methods to score, e.g. gradcam, saliency, cam, smoothgrad.",
    )
    target_layer: str | None = setting(
        None, "Dotted module name CAM methods read (unset: last map with >= 7x7 cells).",
        example="layer4",
    )  # fmt: skip
    output_key: str | None = setting(
        None, "Where a tuple or dict output holds the logits (unset: logits, else 1st tensor).",
        example="scores",
    )  # fmt: skip
    image_size: int = setting(
        224, "Side, in pixels, the images are resized to for the model.", low=16
    )
    normalize: str = setting("imagenet", "Input normalisation: imagenet, none or M,M,M/S,S,S.")
    device: Device = setting(
        "auto", "Where the model runs: auto (CUDA when available), cpu or cuda."
    )
    batch_size: int = setting(32, "Images per forward and backward pass.", low=1)
    num_workers: int = setting(
        0, "DataLoader worker processes; 0 decodes the images inline.", flag="--workers", low=0
    )
    exemplars_per_class: int = setting(
        4, "Most off-object images kept per class to show in the report.", low=0
    )
    donor_pool: int = setting(
        64, "Images whose object-free backgrounds are swapped in and sanity-checked.", low=0
    )
    split: str | None = setting(
        None, "VOC image set ImageSets/Main/<split>.txt (unset: every XML file).", example="val"
    )
    label_policy: LabelPolicy = setting(
        "single", "Images of several categories: audit the largest (single) or each (all)."
    )
    class_map: str | None = setting(
        None, "JSON {category: index} or CSV category,index: categories -> model outputs.",
        example="class_map.json", path=True,
    )  # fmt: skip
    keep_aspect: bool = setting(
        False, "Letterbox: resize the long side, pad the rest (padding is never scored)."
    )
    max_skipped: float = setting(
        0.5, "Largest share (0-1) of images that may be skipped; above it, exit code 1.", low=0,
        high=1,
    )  # fmt: skip
    primary_method: str | None = setting(
        None, "Method that ranks exemplars and draws histograms (unset: first audited).",
        example="gradcam",
    )  # fmt: skip
    group_by: tuple[str, ...] = setting(
        (), "Per-image attributes whose groups of images are audited too.", listed="repeat"
    )
    attributes: str | None = setting(
        None, "CSV image,attribute,value of per-image attributes.", example="attributes.csv",
        path=True,
    )  # fmt: skip
    subgroup_maps: int = setting(
        1000, "Most maps per class clustered into subgroups; 0 turns subgroups off.", low=0
    )
    subgroup_method: str = setting(
        "gradient_x_input", "Method whose maps are clustered into subgroups (scored only if "
        "audited).",
    )  # fmt: skip
    hotspot_maps: int = setting(
        1000, "Most maps per class and method tested for an off-object hotspot; 0: off.", low=0
    )
    overlay_images: int = setting(
        256, "Images that carry the other classes' mean backgrounds (mean-background hijack test).",
        low=0,
    )  # fmt: skip
    intervention_images: int = setting(
        200, "About the most images per class that get the interventions (a seeded sample; "
        "0: every image).", low=0,
    )  # fmt: skip
    extra_interventions: tuple[str, ...] = setting(
        (), "Further interventions to run, e.g. blurred (the object on its blurred background).",
        example="blurred",
    )  # fmt: skip
    broken_swap_maps: int = setting(
        500, "About the most broken swaps per class whose maps are made (a seeded sample).",
        low=0,
    )  # fmt: skip
    class_model_steps: int = setting(
        100, "Gradient-ascent steps of the class model image; 0 turns it off.", low=0
    )
    class_model_jitter: int = setting(
        2, "Pixels the class model is rolled by, at most, before each step.", low=0
    )
    class_model_blur: float = setting(
        0.5, "Sigma of the Gaussian blur of the class model every 10 steps; 0: none.", low=0
    )
    name: str | None = setting(
        None, "The audit's name: its previous run is the newest of this name (unset: --out).",
        example="resnet18-on-birds",
    )  # fmt: skip
    history: str | None = setting(
        None, "Run history (SQLite) to record in (unset: $AUDITOR_HISTORY, else "
        "reports/history.sqlite).", example="reports/history.sqlite",
    )  # fmt: skip
    precision: Precision = setting(
        "fp32", "Autocast of the forward passes: fp32, bf16 or fp16; maps and scores stay "
        "float32.",
    )  # fmt: skip
    channels_last: bool = setting(
        False, "Channels-last memory layout: faster convolutions on GPUs, the same maps."
    )
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        for name in ("methods", "group_by", "extra_interventions"):  # TOML, Python give lists
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        check_settings(self)
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"Expected methods from {', '.join(KNOWN_METHODS)}, "
                f"got {', '.join(self.methods) or 'none'}."
            )
        if self.primary_method is not None and self.primary_method not in self.methods:
            raise ConfigError(
                f"Expected primary_method among the methods ({', '.join(self.methods)}), "
                f"got {self.primary_method!r}."
            )
        if self.subgroup_method not in KNOWN_METHODS:
            raise ConfigError(
                f"Expected subgroup_method from {', '.join(KNOWN_METHODS)}, "
                f"got {self.subgroup_method!r}."
            )
        if self.split is not None and (not self.split or any(c in self.split for c in "/\\")):
            raise ConfigError(f"Expected split to be an image-set name, got {self.split!r}.")
        parse_normalize(self.normalize)

    @property
    def primary(self) -> str:
        """The method that ranks exemplars and draws a class's histogram of C:
        ``primary_method``, else the first audited method in the registry's order
        (gradcam, saliency, gradient_x_input, ...), whatever order ``methods`` lists them in.
        Decided here only; a run stores it (``summary.json``'s ``primary_method``)."""
        if self.primary_method is not None:
            return self.primary_method
        return next(m for m in KNOWN_METHODS if m in self.methods)

    @property
    def attributed(self) -> tuple[str, ...]:
        """The methods each batch computes: the audited ones, and the subgroup method (its
        maps are clustered, never scored) when subgroups are sought and it is not audited."""
        if self.subgroup_maps == 0 or self.subgroup_method in self.methods:
            return self.methods
        return (*self.methods, self.subgroup_method)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
