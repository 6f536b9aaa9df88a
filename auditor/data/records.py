"""The format-independent view of a dataset: one :class:`Record` per audited image, and a
torch ``Dataset`` that decodes, masks and transforms it, turning per-sample failures into a
skip reason instead of an exception."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from auditor.data.transforms import AuditTransform
from auditor.errors import DataError


class SkipReason(StrEnum):
    """Why a sample was not audited. Stored in ``samples.parquet`` and listed in the report."""

    MISSING_FILE = "missing_file"
    UNREADABLE_IMAGE = "unreadable_image"
    EMPTY_FILE = "empty_file"
    OUTSIDE_ROOT = "outside_root"
    SIZE_MISMATCH = "size_mismatch"
    EMPTY_MASK = "empty_mask"
    BAD_ANNOTATION = "bad_annotation"
    UNKNOWN_CATEGORY = "unknown_category"
    DUPLICATE_ID = "duplicate_id"


@dataclass(frozen=True)
class Record:
    """One image to audit. ``decode_mask`` turns the annotation into a bool ``[H, W]`` array."""

    image_id: str
    path: Path
    label: int
    label_name: str
    height: int | None
    width: int | None
    decode_mask: Callable[[int, int], np.ndarray] = field(repr=False, compare=False)
    skip: SkipReason | None = None
    skip_detail: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """What the readers found: records, class names in model-output order, and the source."""

    records: list[Record]
    class_names: list[str]
    source: Path


def read_dataset(data: str | Path, *, images: str | Path | None = None) -> DatasetInfo:
    """Pick the reader by what ``data`` points at (only COCO JSON is supported so far)."""
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder.")
    if path.suffix.lower() == ".json":
        from auditor.data.coco import read_coco

        return read_coco(path, images=images)
    raise DataError(f"{path}: unsupported data format (expected a COCO annotation .json file).")


class AuditDataset(torch.utils.data.Dataset):
    """Decodes records into ``{inputs, masks, targets, index, skip}`` samples.

    A sample that cannot be used comes back with zero tensors and a non-empty ``skip``
    reason, so one bad file never stops a run and is never silently dropped.
    """

    def __init__(self, records: Sequence[Record], transform: AuditTransform) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        try:
            inputs, masks = self._load(record)
            skip = ""
        except _Skip as exc:
            size = self.transform.image_size
            inputs, masks = torch.zeros(3, size, size), torch.zeros(size, size, dtype=torch.bool)
            skip = f"{exc.reason}:{exc.detail}"
        return {
            "inputs": inputs,
            "masks": masks,
            "targets": record.label,
            "index": index,
            "skip": skip,
        }

    def _load(self, record: Record) -> tuple[torch.Tensor, torch.Tensor]:
        if record.skip is not None:
            raise _Skip(record.skip, record.skip_detail)
        image = load_image(record.path)
        if record.height is not None and (image.height, image.width) != (
            record.height,
            record.width,
        ):
            raise _Skip(
                SkipReason.SIZE_MISMATCH,
                f"annotated {record.width}x{record.height}, file is {image.width}x{image.height}",
            )
        try:
            mask = record.decode_mask(image.height, image.width)
        except Exception as exc:  # a malformed polygon or RLE is this sample's problem only
            raise _Skip(SkipReason.BAD_ANNOTATION, f"mask could not be decoded: {exc}") from None
        if not mask.any():
            raise _Skip(SkipReason.EMPTY_MASK, "the label's mask has no pixel inside the image")
        return self.transform(image, mask)


class _Skip(Exception):
    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


def load_image(path: Path) -> Image.Image:
    """Decode an image file to RGB, or raise ``_Skip`` with the reason."""
    if not path.is_file():
        raise _Skip(SkipReason.MISSING_FILE, f"{path.name} not found")
    if path.stat().st_size == 0:
        raise _Skip(SkipReason.EMPTY_FILE, f"{path.name} is empty")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _Skip(SkipReason.UNREADABLE_IMAGE, f"{path.name}: {exc}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit grayscale is rescaled, not clipped)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray((array / peak * 255).astype(np.uint8))
    if image.mode == "RGBA" or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, (0, 0, 0))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


def parse_skip(skip: str) -> tuple[str, str]:
    """Split a sample's ``"reason:detail"`` skip string."""
    reason, _, detail = skip.partition(":")
    return reason, detail
