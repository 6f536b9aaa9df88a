"""The format-independent view of a dataset: one :class:`Record` per audited (image, label),
and a torch ``Dataset`` that decodes, masks and transforms it, turning per-sample failures
into a skip reason instead of an exception."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditor.config import LabelPolicy
from auditor.data.entries import MaskDecoder, SampleSkip, SkipReason
from auditor.data.images import load_image
from auditor.data.transforms import AuditTransform
from auditor.errors import DataError

__all__ = [
    "AuditDataset", "DatasetInfo", "LabelPolicy", "Record", "SkipReason", "parse_skip",
    "read_dataset",
]  # fmt: skip


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


@dataclass(frozen=True)
class DatasetInfo:
    """What the readers found: records, class names in model-output order, and the source."""

    records: list[Record]
    class_names: list[str]
    source: Path


def read_dataset(
    data: str | Path,
    *,
    images: str | Path | None = None,
    split: str | None = None,
    label_policy: LabelPolicy = "single",
    class_map: str | Path | None = None,
) -> DatasetInfo:
    """Read a COCO JSON file, a Pascal VOC root folder or a CSV manifest.

    ``images`` is the image root (default: the file's folder; VOC: ``JPEGImages``), ``split``
    the VOC image set, ``label_policy`` and ``class_map`` as in :func:`build_records`.
    """
    from auditor.data.labels import build_records, load_class_map

    path = Path(data)
    categories, entries = _read_entries(path, images=images, split=split)
    mapping = load_class_map(class_map) if class_map is not None else None
    records, names = build_records(
        entries,
        categories,
        policy=label_policy,
        class_map=mapping,
        source=path,
        map_source=Path(class_map) if class_map is not None else None,
    )
    return DatasetInfo(records=records, class_names=names, source=path)


def _read_entries(path: Path, *, images: str | Path | None, split: str | None) -> Any:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder.")
    if path.is_dir():
        from auditor.data.voc import read_voc

        return read_voc(path, images=images, split=split)
    if split is not None:
        raise DataError(f"{path}: --split applies to a Pascal VOC root, not to a file.")
    suffix = path.suffix.lower()
    if suffix == ".json":
        from auditor.data.coco import read_coco

        return read_coco(path, images=images)
    if suffix == ".csv":
        from auditor.data.manifest import read_manifest

        return read_manifest(path, images=images)
    raise DataError(
        f"{path}: unsupported data format (expected a COCO .json file, a Pascal VOC root "
        f"folder or a .csv manifest, got a {suffix or 'suffix-less'} file)."
    )


class AuditDataset(torch.utils.data.Dataset):
    """Decodes records into ``{inputs, masks, ignore, targets, index, skip}`` samples:
    inputs ``Tensor[3, S, S]`` float32, masks and ignore ``Tensor[S, S]`` bool.

    A sample that cannot be used comes back with zero tensors and a non-empty ``skip``
    (``"reason:detail"``), so one bad file never stops a run and is never silently dropped.
    """

    def __init__(self, records: Sequence[Record], transform: AuditTransform) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        try:
            inputs, masks, ignore = self._load(record)
            skip = ""
        except SampleSkip as exc:
            size = self.transform.image_size
            inputs = torch.zeros(3, size, size)
            masks = torch.zeros(size, size, dtype=torch.bool)
            ignore = torch.zeros(size, size, dtype=torch.bool)
            skip = f"{exc.reason}:{exc.detail}"
        return {
            "inputs": inputs,
            "masks": masks,
            "ignore": ignore,
            "targets": record.label,
            "index": index,
            "skip": skip,
        }

    def _load(self, record: Record) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if record.skip is not None:
            raise SampleSkip(record.skip, record.skip_detail)
        size = (record.width, record.height) if record.width and record.height else None
        image = load_image(record.path, annotated=size)
        _check_size(record, image.height, image.width)
        mask = _decode(record.decode_mask, image.height, image.width, "mask")
        if not mask.any():
            raise SampleSkip(SkipReason.EMPTY_MASK, "the label's mask has no pixel in the image")
        ignore = None
        if record.decode_ignore is not None:
            ignore = _decode(record.decode_ignore, image.height, image.width, "ignore region")
            ignore &= ~mask
        inputs, masks, ignored = self.transform.apply(image, mask, ignore)
        if not masks.any():
            raise SampleSkip(SkipReason.EMPTY_MASK, "the mask vanished in the resize or crop")
        return inputs, masks, ignored


def _check_size(record: Record, height: int, width: int) -> None:
    if record.height is None or record.width is None:
        return
    if (height, width) != (record.height, record.width):
        turned = (width, height) == (record.height, record.width)
        hint = "; the same size turned by 90 degrees: rotated file or EXIF orientation?"
        raise SampleSkip(
            SkipReason.SIZE_MISMATCH,
            f"annotated {record.width}x{record.height}, file is {width}x{height}"
            + (hint if turned else ""),
        )


def _decode(decoder: MaskDecoder, height: int, width: int, what: str) -> np.ndarray:
    try:
        mask = np.asarray(decoder(height, width), dtype=bool)
    except SampleSkip:
        raise
    except Exception as exc:  # a malformed polygon or RLE is this sample's problem only
        raise SampleSkip(SkipReason.BAD_ANNOTATION, f"{what} could not be decoded: {exc}") from None
    if mask.shape != (height, width):
        raise SampleSkip(
            SkipReason.SIZE_MISMATCH, f"{what} is {mask.shape}, image {height}x{width}"
        )
    return mask


def parse_skip(skip: str) -> tuple[str, str]:
    """Split a sample's ``"reason:detail"`` skip string."""
    reason, _, detail = skip.partition(":")
    return reason, detail
