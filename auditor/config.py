"""Audit settings: frozen dataclasses with validation, loadable from TOML."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from auditor.attribution.engine import METHODS as KNOWN_METHODS
from auditor.errors import ConfigError

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
    least ``min_gap``). A flag needs both; one alone gives a warning. Saliency p-values are
    Benjamini-Hochberg adjusted across classes at false discovery rate ``q``.
    A method never drives a flag when its maps for a re-initialised model keep a Spearman
    correlation above ``sanity_max_similarity`` with the trained model's (Adebayo et al.),
    or when it is a CAM whose cells are larger than the median object.
    A part of a class (a subgroup) also shows saliency evidence when its maps sit further off
    the object than the rest of its class's: the difference of mean ``chance_corrected``
    below zero by a one-sided Welch test (BH-adjusted across methods, at ``q``) with a
    standardised effect (Cohen's d) of at least ``min_effect_vs_class`` in size.
    """

    min_n: int = 20
    max_chance_corrected: float = 0.0
    min_gap: float = 0.1
    alpha: float = 0.05
    q: float = 0.05
    sanity_samples: int = 16
    sanity_max_similarity: float = 0.5
    min_effect_vs_class: float = 0.5
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
    class_model_steps: int = 100
    class_model_jitter: int = 2
    class_model_blur: float = 0.5
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
        for name in ("exemplars_per_class", "donor_pool", "subgroup_maps", "class_model_steps",
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
    known = {f.name for f in dataclasses.fields(AuditConfig)} - {"detect"}
    detect_known = {f.name for f in dataclasses.fields(DetectConfig)}
    bad = sorted(set(raw) - known) + [f"detect.{k}" for k in sorted(set(detect_raw) - detect_known)]
    if bad:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(bad)}.")
    values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return AuditConfig(**values, detect=DetectConfig(**detect_raw))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


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
