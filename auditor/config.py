"""Audit settings: frozen dataclasses with validation, read from and written as TOML."""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from auditor._version import __version__
from auditor.attribution.engine import METHODS as KNOWN_METHODS
from auditor.errors import ConfigError, OutputError

Device = Literal["auto", "cpu", "cuda"]
LabelPolicy = Literal["single", "all"]


@dataclass(frozen=True)
class DetectConfig:
    """Thresholds of the per-class flag rule. Defaults are documented in README.md.

        Saliency evidence: with at least ``min_n`` scored samples, the upper end of the bootstrap
        CI of a method's mean ``chance_corrected`` lies below ``max_chance_corrected`` (default 0:
        the map finds the object, with confidence, no better than a uniform map would).
        Behavioural evidence: swapping the background costs the class at least ``min_gap``
        accuracy (lower CI end), or the background alone predicts the class more often than it
        predicts it for other classes' backgrounds (one-sided Fisher test at ``alpha``, by at
        least ``min_gap``). A flag needs both kinds of evidence, or both behavioural tests (two
    independent interventions that agree); one kind alone gives a warning. Saliency p-values are
        Benjamini-Hochberg adjusted across classes at false discovery rate ``q``.
        A method never drives a flag when its maps for a re-initialised model keep a Spearman
        correlation above ``sanity_max_similarity`` with the trained model's (Adebayo et al.),
        or when it is a CAM whose cells are larger than the median object.
        A part of a class (a subgroup) also shows saliency evidence when its maps sit further off
        the object than the rest of its class's: the difference of mean ``chance_corrected``
        below zero by a one-sided Welch test (BH-adjusted across methods, at ``q``) with a
        standardised effect (Cohen's d) of at least ``min_effect_vs_class`` in size.
        A class also shows saliency evidence when one place off its objects draws its maps'
        attribution than the maps of every other class do (:mod:`auditor.detect.hotspot`):
        held-out one-sided Mann-Whitney tests, BH-adjusted at ``q``, with a probability of
        superiority of at least ``min_hotspot_superiority`` (0.5: none; 0.64: d of about 0.5).
    """

    min_n: int = 20
    max_chance_corrected: float = 0.0
    min_gap: float = 0.1
    alpha: float = 0.05
    q: float = 0.05
    sanity_samples: int = 16
    sanity_max_similarity: float = 0.5
    min_effect_vs_class: float = 0.5
    min_hotspot_superiority: float = 0.64
    bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self, prefix="detect.")
        if self.min_n < 2:
            raise ConfigError(f"Expected detect.min_n >= 2, got {self.min_n}.")
        if self.bootstrap < 100:
            raise ConfigError(f"Expected detect.bootstrap >= 100, got {self.bootstrap}.")
        if not 0.5 < self.confidence < 1:
            raise ConfigError(f"Expected detect.confidence in (0.5, 1), got {self.confidence}.")
        for name in ("alpha", "q"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"Expected detect.{name} in (0, 1), got {getattr(self, name)}.")
        if not 0 <= self.min_gap <= 1:
            raise ConfigError(f"Expected detect.min_gap in [0, 1], got {self.min_gap}.")
        if self.min_effect_vs_class < 0:
            raise ConfigError(
                f"Expected detect.min_effect_vs_class >= 0, got {self.min_effect_vs_class}."
            )
        if not 0.5 <= self.min_hotspot_superiority <= 1:
            raise ConfigError(
                "Expected detect.min_hotspot_superiority in [0.5, 1], "
                f"got {self.min_hotspot_superiority}."
            )
        if self.sanity_samples < 0:
            raise ConfigError(f"Expected detect.sanity_samples >= 0, got {self.sanity_samples}.")
        for name in ("max_chance_corrected", "sanity_max_similarity"):
            if not -1 <= getattr(self, name) <= 1:
                raise ConfigError(f"Expected detect.{name} in [-1, 1], got {getattr(self, name)}.")


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit run needs besides the model and the data."""

    methods: tuple[str, ...] = ("gradcam", "saliency")
    target_layer: str | None = None
    image_size: int = 224
    normalize: str = "imagenet"
    device: Device = "auto"
    batch_size: int = 32
    num_workers: int = 0
    exemplars_per_class: int = 4
    donor_pool: int = 64
    split: str | None = None
    label_policy: LabelPolicy = "single"
    class_map: str | None = None
    keep_aspect: bool = False
    max_skipped: float = 0.5
    primary_method: str | None = None
    group_by: tuple[str, ...] = ()
    attributes: str | None = None
    subgroup_maps: int = 1000
    subgroup_method: str = "gradient_x_input"
    hotspot_maps: int = 1000
    intervention_images: int = 200
    broken_swap_maps: int = 500
    class_model_steps: int = 100
    class_model_jitter: int = 2
    class_model_blur: float = 0.5
    history: str | None = None
    precision: str = "fp32"
    channels_last: bool = False
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        for name in ("methods", "group_by"):  # TOML and Python callers give lists
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        check_types(self)
        unknown = [m for m in self.methods if m not in KNOWN_METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"Expected methods from {', '.join(KNOWN_METHODS)}, "
                f"got {', '.join(self.methods) or 'none'}."
            )
        if self.image_size < 16:
            raise ConfigError(f"Expected image_size >= 16, got {self.image_size}.")
        if self.batch_size < 1:
            raise ConfigError(f"Expected batch_size >= 1, got {self.batch_size}.")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"Expected precision fp32, bf16 or fp16, got {self.precision!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"Expected device auto, cpu or cuda, got {self.device!r}.")
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
        if not 0 <= self.max_skipped <= 1:
            raise ConfigError(f"Expected max_skipped in [0, 1], got {self.max_skipped}.")
        for name in ("exemplars_per_class", "donor_pool", "subgroup_maps", "hotspot_maps",
                     "intervention_images", "broken_swap_maps", "class_model_steps",
                     "class_model_jitter", "class_model_blur"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ConfigError(f"Expected {name} >= 0, got {getattr(self, name)}.")
        self._check_data_options()
        parse_normalize(self.normalize)

    def _check_data_options(self) -> None:
        if self.label_policy not in ("single", "all"):
            raise ConfigError(f"Expected label_policy single or all, got {self.label_policy!r}.")
        if self.num_workers < 0:
            raise ConfigError(f"Expected num_workers >= 0, got {self.num_workers}.")
        if not isinstance(self.keep_aspect, bool):
            raise ConfigError(f"Expected keep_aspect true or false, got {self.keep_aspect!r}.")
        if self.split is not None and (not self.split or any(c in self.split for c in "/\\")):
            raise ConfigError(f"Expected split to be an image-set name, got {self.split!r}.")

    @property
    def primary(self) -> str:
        """The method that ranks exemplars and draws a class's histogram of C:
        ``primary_method``, else the first audited method in the registry's order
        (gradcam, saliency, gradient_x_input, ...), whatever order ``methods`` lists them in."""
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


# One line per setting, written above it by ``auditor init-config``; a test fails when a field
# of AuditConfig or DetectConfig has none, so a new setting cannot go undocumented.
MEANINGS: dict[str, str] = {
    "methods": "Attribution methods to score (--methods), e.g. gradcam, saliency, cam, smoothgrad.",
    "target_layer": "Dotted module name CAM methods read (unset: last map with >= 7x7 cells).",
    "image_size": "Side, in pixels, the images are resized to for the model (--image-size).",
    "normalize": "Input normalisation (--normalize): imagenet, none or M,M,M/S,S,S.",
    "device": "Where the model runs (--device): auto (CUDA when available), cpu or cuda.",
    "batch_size": "Images per forward and backward pass (--batch-size).",
    "num_workers": "DataLoader worker processes (--workers); 0 decodes the images inline.",
    "exemplars_per_class": "Most off-object images kept per class to show in the report.",
    "donor_pool": "Images whose object-free backgrounds are swapped in and sanity-checked.",
    "split": "VOC image set ImageSets/Main/<split>.txt (--split; unset: every XML file).",
    "label_policy": "Images of several categories: audit the largest (single) or each (all).",
    "class_map": "JSON {category: index} or CSV category,index: categories -> model outputs.",
    "keep_aspect": "Letterbox: resize the long side, pad the rest (padding is never scored).",
    "max_skipped": "Largest share (0-1) of images that may be skipped; above it, exit code 1.",
    "primary_method": "Method that ranks exemplars and draws histograms (unset: first audited).",
    "group_by": "Per-image attributes whose groups of images are audited too (--group-by).",
    "attributes": "CSV image,attribute,value of per-image attributes (--attributes).",
    "subgroup_maps": "Most maps per class clustered into subgroups; 0 turns subgroups off.",
    "subgroup_method": "Method whose maps are clustered into subgroups (scored only if audited).",
    "hotspot_maps": "Most maps per class and method tested for an off-object hotspot; 0: off.",
    "intervention_images": "About the most images per class that get the interventions (a "
    "seeded sample; 0: every image).",
    "broken_swap_maps": "About the most broken swaps per class whose maps are made (a seeded "
    "sample).",
    "class_model_steps": "Gradient-ascent steps of the class model image; 0 turns it off.",
    "class_model_jitter": "Pixels the class model is rolled by, at most, before each step.",
    "class_model_blur": "Sigma of the Gaussian blur of the class model every 10 steps; 0: none.",
    "history": "Run history (SQLite) the audit is recorded in (--history; unset: "
    "reports/history.sqlite).",
    "precision": "Autocast of the forward passes (--precision): fp32, bf16 or fp16; maps and "
    "scores stay float32.",
    "channels_last": "Channels-last memory layout (--channels-last): faster on GPUs, same maps.",
    "detect.min_n": "Fewest scored images a class is judged on; fewer gives insufficient_data.",
    "detect.max_chance_corrected": "Saliency evidence: CI of mean chance-corrected energy below.",
    "detect.min_gap": "Behavioural evidence: the least accuracy a background swap must cost.",
    "detect.alpha": "Level of the one-sided Fisher test of background-only predictions.",
    "detect.q": "False discovery rate of the Benjamini-Hochberg adjustment across classes.",
    "detect.sanity_samples": "Images of the model-randomisation check of each method's maps.",
    "detect.sanity_max_similarity": "Above this Spearman similarity a method drives no flag.",
    "detect.min_effect_vs_class": "Least Cohen's d of a subgroup's maps against its class's.",
    "detect.min_hotspot_superiority": "Least chance a class's image draws more to its hotspot "
    "than another class's does (0.5: none).",
    "detect.bootstrap": "Bootstrap resamples of each confidence interval.",
    "detect.confidence": "Confidence level of the intervals (0.95: 95% CIs).",
    "detect.seed": "Seed of the bootstraps and samples: the same inputs give the same results.",
}
# What init-config shows, commented out, for a setting whose default is None (TOML has no null).
UNSET_EXAMPLES: dict[str, str] = {
    "target_layer": "layer4",
    "split": "val",
    "class_map": "class_map.json",
    "primary_method": "gradcam",
    "attributes": "attributes.csv",
    "history": "reports/history.sqlite",
}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``imagenet`` | ``none`` | ``M,M,M/S,S,S`` -> (mean, std) or None."""
    if text == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if text == "none":
        return None
    try:
        mean_text, std_text = text.split("/")
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise ConfigError(
            f"Expected --normalize imagenet, none or M,M,M/S,S,S, got {text!r}."
        ) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"Expected 3 means and 3 positive stds in --normalize, got {text!r}.")
    return mean, std


def load_config(path: str | Path, **overrides: Any) -> AuditConfig:
    """Read an ``audit.toml``; keyword overrides (from the CLI) win over the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}).") from None
    return config_from_dict(raw, source=str(path), **overrides)


def config_from_dict(
    raw: dict[str, Any], *, source: str = "config", **overrides: Any
) -> AuditConfig:
    raw = dict(raw)
    detect_raw = raw.pop("detect", {})
    if not isinstance(detect_raw, dict):
        raise ConfigError(f"{source}: expected a [detect] table, got {detect_raw!r:.40}.")
    top, detect = _field_names(AuditConfig) - {"detect"}, _field_names(DetectConfig)
    unknown = [_unknown(k, top, other=detect, where="[detect]") for k in sorted(set(raw) - top)]
    unknown += [
        _unknown(k, detect, other=top, where="the top level, above [detect]", prefix="detect.")
        for k in sorted(set(detect_raw) - detect)
    ]
    if unknown:
        raise ConfigError(f"{source}: {' '.join(unknown)}")
    values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return AuditConfig(**values, detect=DetectConfig(**detect_raw))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _field_names(settings: type) -> set[str]:
    return {f.name for f in dataclasses.fields(settings)}


def _unknown(key: str, known: set[str], *, other: set[str], where: str, prefix: str = "") -> str:
    """The error for one unknown key, with the nearest known one (a typo is the usual cause),
    or the table it belongs in."""
    if key in other:
        return f"unknown key {prefix + key!r}; it belongs in {where}."
    nearest = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {prefix + nearest[0]!r}?" if nearest else "."
    return f"unknown key {prefix + key!r}{hint}"


def config_toml() -> str:
    """``audit.toml`` holding every setting at its default with its meaning above it, built
    from the dataclasses' fields so that a new setting is written too. Loads back to
    ``AuditConfig()``."""
    lines = [
        "# Settings of `auditor audit --config audit.toml`, written by `auditor init-config`",
        f"# (auditor {__version__}). Every setting is at its default; options given on the",
        "# command line win over this file. Settings unset by default are commented out.",
        *_toml_lines(AuditConfig(), prefix=""),
        "",
        "# Thresholds of the flag rule (README: How a class is judged).",
        "[detect]",
        *_toml_lines(DetectConfig(), prefix="detect."),
    ]
    return "\n".join(lines) + "\n"


def write_config(path: str | Path, *, force: bool = False) -> None:
    """Write :func:`config_toml` to ``path``; an existing file is kept unless ``force``."""
    path = Path(path)
    try:
        with path.open("w" if force else "x", encoding="utf-8") as file:
            file.write(config_toml())
    except FileExistsError:
        raise OutputError(f"{path}: already exists; add --force to overwrite it.") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the config ({exc.strerror}).") from None


def _toml_lines(settings: Any, *, prefix: str) -> list[str]:
    lines = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            continue  # a table of its own
        key = prefix + f.name
        lines += ["", f"# {MEANINGS[key]}"]
        if value is None:
            lines.append(f"# {f.name} = {_toml_value(UNSET_EXAMPLES[key])}")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"No TOML form for a setting of type {type(value).__name__}: {value!r}.")


def check_types(settings: Any, *, prefix: str = "") -> None:
    """Every field of the dataclass ``settings`` holds a value of its annotated type: an int
    is no float and a bool no int, a string is no list of names."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, hint = getattr(settings, f.name), hints[f.name]
        if not _is_a(value, hint):
            raise ConfigError(
                f"Expected {prefix}{f.name} to be {_describe(hint)}, "
                f"got {value!r:.60} ({type(value).__name__})."
            )


def _is_a(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (types.UnionType, typing.Union):
        return any(_is_a(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(_is_a(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    return isinstance(hint, type) and isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return "a list of strings" if args[0] is str else f"a list of {_describe(args[0])}"
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return words.get(hint, "absent" if hint is type(None) else getattr(hint, "__name__", str(hint)))
