"""The torch ``Dataset`` of an audit: decodes, masks and transforms each record, turning
per-sample failures into a skip reason instead of an exception."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from auditor.data.entries import MaskDecoder, Record, SampleSkip, SkipReason
from auditor.data.images import load_image
from auditor.data.transforms import AuditTransform


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
            raise SampleSkip(SkipReason.EMPTY_MASK, "the mask vanished in the resize")
        if bool((masks | ignored).all()):
            raise SampleSkip(
                SkipReason.NO_BACKGROUND,
                f"the mask covers the whole {self.transform.image_size} px input: no background "
                "to compare with",
            )
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
