"""Object masks from boxes, COCO polygons and RLE, and label PNGs, as picklable decoders.

Every decoder is called as ``decoder(height, width)`` and returns a bool ``ndarray[H, W]``
clipped to the image. Malformed input raises ``ValueError`` (or :class:`SampleSkip`) before
any C code sees it, so a bad annotation costs one sample, never the process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from auditor.data.entries import MaskDecoder, SampleSkip, SkipReason
from auditor.data.images import read_label_png

# A vertex this many image sizes away is an error, not a polygon partly outside the image.
_MAX_REACH = 8


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Pixels of a box ``(x0, y0, x1, y1)`` in continuous, 0-based, half-open pixel
    coordinates (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``), corners rounded to the
    nearest pixel edge and clipped to the image: ``ndarray[H, W]`` bool."""
    x0, y0, x1, y1 = (_finite(v) for v in box)
    mask = np.zeros((height, width), dtype=bool)
    c0, r0 = _clip(round(x0), width), _clip(round(y0), height)
    c1, r1 = _clip(round(x1), width), _clip(round(y1), height)
    mask[r0:r1, c0:c1] = True
    return mask


def coco_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Bool ``[H, W]`` mask of one COCO annotation: polygons, RLE (compressed or not), or
    its ``bbox`` when there is no segmentation."""
    segmentation = ann.get("segmentation")
    if segmentation:
        if isinstance(segmentation, list):
            return _polygons(segmentation, height, width)
        if isinstance(segmentation, dict):
            return _rle(segmentation, height, width)
        raise ValueError(f"segmentation must be a list or an object, got {segmentation!r:.40}")
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        raise ValueError("no segmentation and no 4-number `bbox`")
    x, y, w, h = (_finite(v) for v in box)
    if w < 0 or h < 0:
        raise ValueError(f"bbox has a negative size: {box}")
    return box_mask((x, y, x + w, y + h), height, width)


def _polygons(polygons: list[Any], height: int, width: int) -> np.ndarray:
    reach = _MAX_REACH * max(height, width, 1)
    for poly in polygons:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            raise ValueError("each polygon must be a flat list of at least 3 x,y pairs")
        if any(abs(_finite(v)) > reach for v in poly):
            raise ValueError(f"polygon vertex farther than {reach} px from the image")
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _rle(rle: dict[str, Any], height: int, width: int) -> np.ndarray:
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise ValueError("RLE `size` must be [height, width]")
    if list(size) != [height, width]:
        raise SampleSkip(
            SkipReason.SIZE_MISMATCH, f"RLE size {size}, image is {height}x{width} (h x w)"
        )
    if isinstance(counts, list):
        _check_counts(counts, height * width)
        compressed = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    elif isinstance(counts, str):
        _check_counts(rle_counts(counts), height * width)
        compressed = {"size": size, "counts": counts.encode("ascii")}
    else:
        raise ValueError("RLE `counts` must be a list of ints or a string")
    return mask_utils.decode(compressed).astype(bool)


def rle_counts(text: str) -> list[int]:
    """Run lengths of a compressed COCO RLE string (the format of pycocotools' ``rleFrString``),
    parsed in Python so that malformed strings fail here rather than in C."""
    counts: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                raise ValueError("RLE string ends inside a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE string has an invalid character {text[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _check_counts(counts: list[Any], total: int) -> None:
    if not all(_is_int(c) and c >= 0 for c in counts):
        raise ValueError("RLE counts must be non-negative integers")
    if sum(counts) != total:
        raise ValueError(f"RLE counts cover {sum(counts)} pixels, the image has {total}")


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r:.40}")
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _clip(value: int, high: int) -> int:
    return min(max(value, 0), high)


@dataclass(frozen=True)
class BoxMask:
    """A box ``(x0, y0, x1, y1)`` in the convention of :func:`box_mask`."""

    box: tuple[float, float, float, float]

    def __call__(self, height: int, width: int) -> np.ndarray:
        return box_mask(self.box, height, width)


@dataclass(frozen=True)
class CocoMask:
    """One COCO annotation (see :func:`coco_mask`)."""

    ann: dict[str, Any]

    def __call__(self, height: int, width: int) -> np.ndarray:
        return coco_mask(self.ann, height, width)


@dataclass(frozen=True)
class PngMask:
    """Pixels of a label PNG whose value is in ``values`` (``None``: any non-zero value)."""

    path: Path
    values: tuple[int, ...] | None = None

    def __call__(self, height: int, width: int) -> np.ndarray:
        array = read_label_png(self.path)
        if array.shape != (height, width):
            found = f"{array.shape[1]}x{array.shape[0]}"
            raise SampleSkip(
                SkipReason.SIZE_MISMATCH,
                f"mask {self.path.name} is {found}, image {width}x{height}",
            )
        if self.values is None:
            return array != 0
        return np.isin(array, self.values)


@dataclass(frozen=True)
class UnionMask:
    """The union of several decoders' masks."""

    parts: tuple[MaskDecoder, ...]

    def __call__(self, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), dtype=bool)
        for part in self.parts:
            mask |= part(height, width)
        return mask
