"""What every reader produces before labels are chosen: images with their object instances,
ignore regions and per-image skip reasons. Decoders are small picklable objects, so a
dataset can cross into DataLoader worker processes under any start method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

MaskDecoder = Callable[[int, int], np.ndarray]
Attributes = tuple[tuple[str, str], ...]
"""Per-image attributes as sorted (name, value) pairs, values as text (``--group-by``)."""
"""``decoder(height, width) -> bool ndarray[H, W]``; raises :class:`SampleSkip` or any
exception (a malformed annotation) for this sample only."""


class SkipReason(StrEnum):
    """Why a sample was not audited. Stored in ``samples.parquet`` and listed in the report."""

    MISSING_FILE = "missing_file"
    UNREADABLE_IMAGE = "unreadable_image"
    EMPTY_FILE = "empty_file"
    OUTSIDE_ROOT = "outside_root"
    SIZE_MISMATCH = "size_mismatch"
    EMPTY_MASK = "empty_mask"
    NO_BACKGROUND = "no_background"
    BAD_ANNOTATION = "bad_annotation"
    MISSING_ANNOTATION = "missing_annotation"
    NO_OBJECT = "no_object"
    UNKNOWN_CATEGORY = "unknown_category"
    UNMAPPED_CATEGORY = "unmapped_category"
    DUPLICATE_ID = "duplicate_id"
    UNKNOWN_IMAGE = "unknown_image"
    NONFINITE_LOGITS = "nonfinite_logits"
    NONFINITE_MAP = "nonfinite_map"


class SampleSkip(Exception):
    """Raised while loading one sample: the sample is skipped with ``reason``, the run goes on."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Category:
    """A dataset category: ``key`` is what instances refer to (COCO: the id as text; VOC and
    CSV: the name), ``name`` is what the report shows."""

    key: str
    name: str


@dataclass(frozen=True)
class Instance:
    """One annotated object: its category key, its area in pixels (for the label policy), and
    how to draw its mask."""

    category: str
    area: float
    decode: MaskDecoder


@dataclass(frozen=True)
class ImageEntry:
    """One image as a reader found it. ``decode_ignore`` draws the regions excluded from
    every metric (COCO crowds, the VOC border); ``None`` means there are none."""

    image_id: str
    path: Path
    height: int | None = None
    width: int | None = None
    instances: tuple[Instance, ...] = ()
    decode_ignore: MaskDecoder | None = None
    skip: SkipReason | None = None
    skip_detail: str = ""
    attributes: Attributes = ()


@dataclass(frozen=True)
class Record:
    """One (image, label) to audit. ``decode_mask`` draws the label's object mask and
    ``decode_ignore`` the regions left out of every metric, both bool ``ndarray[H, W]``.
    ``other_labels`` names the image's other categories (label policy ``single``)."""

    image_id: str
    path: Path
    label: int
    label_name: str
    height: int | None
    width: int | None
    decode_mask: MaskDecoder = field(repr=False, compare=False)
    skip: SkipReason | None = None
    skip_detail: str = ""
    decode_ignore: MaskDecoder | None = field(default=None, repr=False, compare=False)
    other_labels: tuple[str, ...] = ()
    attributes: Attributes = ()

    def attribute(self, name: str) -> str | None:
        """The image's value of attribute ``name`` (``--group-by``), None when it has none."""
        return dict(self.attributes).get(name)


def name_order(name: str) -> tuple[int, str]:
    """Sort key for category names: numerically when a name is an integer, else by text."""
    return (0, f"{int(name):020d}") if name.isdigit() else (1, name)


def skipped_entry(image_id: str, path: Path, reason: SkipReason, detail: str) -> ImageEntry:
    return ImageEntry(image_id=image_id, path=path, skip=reason, skip_detail=detail)
