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
from PIL import Image, ImageDraw

from auditor.errors import ConfigError

SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
BACKGROUNDS = ("water", "foliage", "sand", "brick", "stone", "fog", "dusk", "grid")
NEUTRAL_KINDS = 2
ARTEFACTS = ("corner", "watermark", "frame")
FRAME_COLOUR = (230, 40, 200)
#: Stroke patterns of the watermark's glyphs, in a glyph cell of unit width and height.
GLYPHS = (
    ((0.0, 0.0, 0.0, 1.0), (0.0, 0.5, 1.0, 0.5), (1.0, 0.0, 1.0, 1.0)),
    ((0.0, 0.0, 1.0, 0.0), (0.5, 0.0, 0.5, 1.0)),
    ((0.0, 1.0, 0.5, 0.0), (0.5, 0.0, 1.0, 1.0), (0.25, 0.5, 0.75, 0.5)),
    ((0.0, 0.0, 0.0, 1.0), (0.0, 1.0, 1.0, 1.0)),
    ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0), (0.0, 1.0, 1.0, 1.0), (0.0, 0.5, 0.7, 0.5)),
    ((0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 1.0), (1.0, 1.0, 1.0, 0.0)),
)
WATERMARK_TEXT = (0, 2, 1, 3, 5, 4)


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


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one image; change a field to intervene."""

    label: int
    shape: str
    center: tuple[float, float]
    radius: float
    angle: float
    color: tuple[int, int, int]
    background: int
    texture_seed: int
    artefact: bool
    size: int
    artefact_kind: str = "corner"


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
    color = tuple(int(255 * c) for c in _hsv_to_rgb(hue, saturation, value))
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


def class_hue(label: int, k: int) -> float:
    """The fixed hue that class ``label`` of ``k`` takes in the object-colour control."""
    return label / k


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


def polygon(scene: Scene) -> list[tuple[float, float]]:
    """The object's outline as (x, y) vertices in pixel coordinates."""
    vertices = {"circle": 40, "square": 4, "triangle": 3, "hexagon": 6}
    if scene.shape in vertices:
        radii = [1.0] * vertices[scene.shape]
    elif scene.shape == "star":
        radii = [1.0, 0.45] * 5
    else:  # cross: 12 corners of a plus sign, as radii at their angles
        radii = []
    if scene.shape == "cross":
        arm = 0.38
        corners = [
            (arm, 1),
            (arm, arm),
            (1, arm),
            (1, -arm),
            (arm, -arm),
            (arm, -1),
            (-arm, -1),
            (-arm, -arm),
            (-1, -arm),
            (-1, arm),
            (-arm, arm),
            (-arm, 1),
        ]
        points = [(x * 0.9, y * 0.9) for x, y in corners]
    else:
        n = len(radii)
        points = [
            (r * math.cos(2 * math.pi * i / n), r * math.sin(2 * math.pi * i / n))
            for i, r in enumerate(radii)
        ]
    cos, sin = math.cos(scene.angle), math.sin(scene.angle)
    cx, cy = scene.center
    return [
        (cx + scene.radius * (x * cos - y * sin), cy + scene.radius * (x * sin + y * cos))
        for x, y in points
    ]


def render(scene: Scene) -> Image.Image:
    """The RGB image of a scene."""
    image = Image.fromarray(background_texture(scene.background, scene.size, scene.texture_seed))
    draw = ImageDraw.Draw(image)
    if scene.artefact and scene.artefact_kind == "watermark":
        _draw_watermark(draw, scene.size, scene.texture_seed)
    draw.polygon(polygon(scene), fill=scene.color)
    if scene.artefact and scene.artefact_kind == "corner":
        _draw_corner_mark(draw, scene.size)
    if scene.artefact and scene.artefact_kind == "frame":
        _draw_frame(draw, scene.size)
    return image


def _draw_corner_mark(draw: ImageDraw.ImageDraw, size: int) -> None:
    side = max(4, size // 8)
    draw.rectangle((1, 1, side, side), fill=(255, 255, 255), outline=(0, 0, 0))
    draw.line((1, 1, side, side), fill=(220, 0, 0), width=max(1, side // 5))


def watermark_box(size: int, seed: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the watermark of an image, placed at random from ``seed``."""
    height = max(4, size // 10)
    width = len(WATERMARK_TEXT) * height
    rng = np.random.default_rng([seed, 1])
    x0, y0 = int(rng.integers(0, size - width + 1)), int(rng.integers(0, size - height + 1))
    return x0, y0, x0 + width - 1, y0 + height - 1


def _draw_watermark(draw: ImageDraw.ImageDraw, size: int, seed: int) -> None:
    x0, y0, _, y1 = watermark_box(size, seed)
    stroke = max(1, size // 64)
    pad = stroke // 2  # a stroke is centred on its line: keep it inside the box
    top, height = y0 + pad, y1 - y0 - 2 * pad
    for i, index in enumerate(WATERMARK_TEXT):
        left = x0 + pad + i * (y1 - y0 + 1)
        for a, b, c, d in GLYPHS[index]:
            line = (
                left + 0.7 * a * height,
                top + b * height,
                left + 0.7 * c * height,
                top + d * height,
            )
            draw.line(line, fill=(25, 25, 25), width=stroke)


def frame_width(size: int) -> int:
    return max(2, size // 20)


def _draw_frame(draw: ImageDraw.ImageDraw, size: int) -> None:
    draw.rectangle((0, 0, size - 1, size - 1), outline=FRAME_COLOUR, width=frame_width(size))


def background_texture(kind: int, size: int, seed: int) -> np.ndarray:
    """``uint8[size, size, 3]`` texture of background ``kind``; the seed varies the detail."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    noise = rng.normal(0, 1, (size, size))
    name = BACKGROUNDS[kind]
    if name == "water":
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (6 * y + 0.6 * np.sin(2 * np.pi * 2 * x + phase)))
        rgb = np.stack([20 + 15 * wave, 70 + 25 * wave, 150 + 40 * wave], -1)
    elif name == "foliage":
        blobs = _smooth(noise, size // 10 + 1)
        rgb = np.stack([40 + 30 * blobs, 110 + 60 * blobs, 35 + 20 * blobs], -1)
    elif name == "sand":
        rgb = np.stack([205 + 18 * noise, 175 + 18 * noise, 110 + 14 * noise], -1)
    elif name == "brick":
        rows = (y * 8).astype(int)
        mortar = ((y * 8) % 1 < 0.12) | (((x * 6) + 0.5 * (rows % 2)) % 1 < 0.08)
        rgb = np.where(mortar[..., None], [200, 200, 195], [160, 60, 45]) + 8 * noise[..., None]
    elif name == "stone":
        rgb = np.repeat((125 + 35 * _smooth(noise, 3))[..., None], 3, -1)
    elif name == "fog":
        rgb = np.stack([180 + 30 * y, 185 + 30 * y, 195 + 25 * y], -1) + 6 * noise[..., None]
    elif name == "dusk":
        rgb = np.stack([120 + 80 * y, 60 + 40 * y, 110 - 40 * y], -1) + 6 * noise[..., None]
    else:  # grid
        lines = ((x * 10) % 1 < 0.1) | ((y * 10) % 1 < 0.1)
        rgb = np.where(lines[..., None], [60, 60, 60], [225, 225, 225]) + 5 * noise[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _smooth(noise: np.ndarray, width: int) -> np.ndarray:
    kernel = np.ones(width) / width
    out = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 0, noise)
    out = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, out)
    return out / (out.std() + 1e-8)


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
