"""Planted-shortcut datasets in COCO format, generated deterministically from a seed.

Each image shows one object (a shape whose outline differs by class, in a random colour,
size, position and rotation) on a procedural background texture. Background kinds
``0..K-1`` are "owned" by classes ``0..K-1``; the remaining kinds are neutral. An image of
class ``c`` gets its own kind with probability ``background_strength[c]``, otherwise a kind
drawn from the ``alternative`` pool: the neutral kinds (so a strength of 0 makes backgrounds
independent of the class), or the other classes' kinds (Waterbirds-style: with two classes,
a strength of 0.5 is independence and 0.99 a strong shortcut). An artefact outside the
object appears with probability ``artefact_rate[c]``: a corner mark, a text-like watermark
at a random position (drawn before the object, so the object hides any overlap), or a
coloured frame around the image (``artefact``). With ``object_colour_strength`` given, an
object of class ``c`` takes its class's fixed hue with that probability: a cue on the object
itself, which no intervention on the background or the artefact removes (a negative control).
The object's circumradius is drawn from ``object_radius`` (fractions of the image side).

Scenes are parametric (:class:`Scene`), so the same object can be rendered again on another
background or without the mark: an exact intervention used to measure ground truth.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from auditor.errors import ConfigError
from auditor.lab.drawing import (
    ARTEFACTS,
    BACKGROUNDS,
    NEUTRAL_KINDS,
    SHAPES,
    Scene,
    class_hue,
    hsv_to_rgb,
    polygon,
    render,
)


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. ``background_strength`` and ``artefact_rate`` are per class."""

    classes: tuple[str, ...] = ("circle", "square", "triangle", "star")
    background_strength: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    artefact_rate: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    image_size: int = 64
    n_train: int = 1600
    n_audit: int = 400
    seed: int = 0
    alternative: Literal["neutral", "others"] = "neutral"
    artefact: Literal["corner", "watermark", "frame"] = "corner"
    object_radius: tuple[float, float] = (0.17, 0.26)
    object_colour_strength: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        k = len(self.classes)
        if not 2 <= k <= len(SHAPES) or any(c not in SHAPES for c in self.classes):
            raise ConfigError(
                f"Expected 2-{len(SHAPES)} classes from {SHAPES}, got {self.classes}."
            )
        if k + NEUTRAL_KINDS > len(BACKGROUNDS):
            raise ConfigError(f"At most {len(BACKGROUNDS) - NEUTRAL_KINDS} classes.")
        for name in ("background_strength", "artefact_rate"):
            values = getattr(self, name)
            if len(values) != k or not all(0.0 <= v <= 1.0 for v in values):
                raise ConfigError(f"Expected {k} values in [0, 1] for {name}, got {values}.")
        colours = self.object_colour_strength
        if colours and (len(colours) != k or not all(0.0 <= v <= 1.0 for v in colours)):
            raise ConfigError(
                f"Expected no value or {k} values in [0, 1] for object_colour_strength, "
                f"got {colours}."
            )
        low, high = self.object_radius
        if not 0.0 < low <= high <= 0.5:
            raise ConfigError(
                f"Expected 0 < low <= high <= 0.5 for object_radius, got {low, high}."
            )
        if self.artefact not in ARTEFACTS:
            raise ConfigError(f"Expected artefact in {ARTEFACTS}, got {self.artefact!r}.")

    @property
    def neutral_kinds(self) -> tuple[int, ...]:
        k = len(self.classes)
        return tuple(range(k, k + NEUTRAL_KINDS))


def sample_scenes(spec: SyntheticSpec, n: int, *, seed: int) -> list[Scene]:
    """``n`` scenes with balanced classes, in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(spec.classes))
    return [_sample_scene(spec, int(label), rng) for label in labels]


def _sample_scene(spec: SyntheticSpec, label: int, rng: np.random.Generator) -> Scene:
    size = spec.image_size
    radius = float(rng.uniform(*spec.object_radius) * size)
    margin = min(radius + 0.14 * size, size / 2)  # clear of the corner mark while it fits
    center = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
    hue = rng.uniform(0, 1)
    saturation, value = rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)
    owned = rng.uniform() < spec.background_strength[label]
    others = [k for k in range(len(spec.classes)) if k != label]
    pool = spec.neutral_kinds if spec.alternative == "neutral" else others
    background = label if owned else int(rng.choice(pool))
    angle, texture_seed = float(rng.uniform(0, 2 * math.pi)), int(rng.integers(2**31))
    artefact = bool(rng.uniform() < spec.artefact_rate[label])
    if spec.object_colour_strength and rng.uniform() < spec.object_colour_strength[label]:
        hue = class_hue(label, len(spec.classes))
    color = tuple(int(255 * c) for c in hsv_to_rgb(hue, saturation, value))
    return Scene(
        label=label,
        shape=spec.classes[label],
        center=center,
        radius=radius,
        angle=angle,
        color=color,  # type: ignore[arg-type]
        background=background,
        texture_seed=texture_seed,
        artefact=artefact,
        size=size,
        artefact_kind=spec.artefact,
    )


def write_dataset(spec: SyntheticSpec, root: str | Path) -> dict[str, Path]:
    """Write ``root/{train,audit}/`` (PNG images + ``annotations.json``); return the JSON paths."""
    root = Path(root)
    splits = {"train": (spec.n_train, spec.seed), "audit": (spec.n_audit, spec.seed + 1)}
    paths = {}
    for split, (n, seed) in splits.items():
        scenes = sample_scenes(spec, n, seed=seed)
        paths[split] = write_coco(scenes, spec, root / split)
    (root / "spec.json").write_text(json.dumps(spec_dict(spec), indent=2))
    return paths


def spec_dict(spec: SyntheticSpec) -> dict[str, object]:
    """The spec as a dict, without the fields added after the first datasets where they hold
    their defaults: older ``spec.json`` files and the caches keyed on them stay valid."""
    return _without_new_defaults(dataclasses.asdict(spec), SyntheticSpec, _NEW_SPEC_FIELDS)


def scene_dict(scene: Scene) -> dict[str, object]:
    return _without_new_defaults(dataclasses.asdict(scene), Scene, _NEW_SCENE_FIELDS)


_NEW_SPEC_FIELDS = ("artefact", "object_radius", "object_colour_strength")
_NEW_SCENE_FIELDS = ("artefact_kind",)


def _without_new_defaults(
    values: dict[str, object], cls: type, names: Sequence[str]
) -> dict[str, object]:
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name in names}
    return {k: v for k, v in values.items() if k not in defaults or v != defaults[k]}


def write_coco(scenes: Sequence[Scene], spec: SyntheticSpec, folder: Path) -> Path:
    """Render scenes to ``folder/images/*.png`` and write ``folder/annotations.json``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, scene in enumerate(scenes, start=1):
        file_name = f"images/{image_id:05d}.png"
        render(scene).save(folder / file_name)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": scene.size,
                "height": scene.size,
                "background": BACKGROUNDS[scene.background],
                "artefact": scene.artefact,
                "attributes": {
                    "background": BACKGROUNDS[scene.background],
                    "artefact": scene.artefact,
                },
            }
        )
        annotations.append(_annotation(image_id, scene))
    coco = {
        "info": {
            "description": "auditor planted-shortcut dataset",
            "spec": spec_dict(spec),
        },
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(spec.classes)],
        "images": images,
        "annotations": annotations,
    }
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    (folder / "scenes.json").write_text(json.dumps([scene_dict(s) for s in scenes]))
    return path


def _annotation(image_id: int, scene: Scene) -> dict[str, object]:
    points = polygon(scene)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0 = max(min(xs), 0.0), max(min(ys), 0.0)
    return {
        "id": image_id,
        "image_id": image_id,
        "category_id": scene.label + 1,
        "segmentation": [[round(v, 2) for p in points for v in p]],
        "bbox": [round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)],
        "area": _polygon_area(points),
        "iscrowd": 0,
    }


def _polygon_area(points: Sequence[tuple[float, float]]) -> float:
    return 0.5 * abs(
        sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]]))
    )


def read_scenes(folder: str | Path) -> list[Scene]:
    raw = json.loads((Path(folder) / "scenes.json").read_text())
    return [Scene(**{**s, "center": tuple(s["center"]), "color": tuple(s["color"])}) for s in raw]


def iter_interventions(
    scenes: Sequence[Scene], spec: SyntheticSpec, *, seed: int
) -> Iterator[Scene]:
    """Each scene moved to a background that carries no cue for its class, with its artefact
    (mark, watermark or frame) removed and its object, colour included, kept. The background
    is a neutral kind other than its own, or, when the training data only ever showed
    the classes' own kinds (``alternative="others"``), another class's kind, so that the
    intervention stays inside the training distribution (Waterbirds' worst group)."""
    rng = np.random.default_rng(seed)
    for scene in scenes:
        pool = spec.neutral_kinds if spec.alternative == "neutral" else range(len(spec.classes))
        cue_free = [k for k in pool if k != scene.label]
        options = [k for k in cue_free if k != scene.background] or cue_free
        yield dataclasses.replace(scene, background=int(rng.choice(options)), artefact=False)


def with_cue_of(scenes: Sequence[Scene], donors: Sequence[Scene], *, seed: int) -> list[Scene]:
    """Each scene given the background (kind and texture) and artefact of a donor drawn at
    random from ``donors``, its own object kept: whatever cue the donors' class carries,
    moved onto other objects, to see whether the prediction follows it."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(donors), size=len(scenes))
    return [
        dataclasses.replace(scene, background=d.background, texture_seed=d.texture_seed,
                            artefact=d.artefact, artefact_kind=d.artefact_kind)
        for scene, d in zip(scenes, (donors[int(i)] for i in picks))
    ]  # fmt: skip
