"""Drawing a planted-shortcut scene: the object's outline, its background texture and the
artefacts (corner mark, watermark, frame), from a parametric :class:`Scene`, so the same
object can be drawn again on another background or without its mark."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

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


def class_hue(label: int, k: int) -> float:
    """The fixed hue that class ``label`` of ``k`` takes in the object-colour control."""
    return label / k


def hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
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
