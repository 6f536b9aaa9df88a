"""COCO annotation files: images, categories, and per-image object masks.

An image's label is the category of its annotations (with several, the one of largest total
area). Its mask is the union of that category's segmentations, or of its boxes where no
segmentation exists. Class ``i`` is the ``i``-th category sorted by id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from auditor.data.records import DatasetInfo, Record, SkipReason
from auditor.errors import DataError


def read_coco(path: Path, *, images: str | Path | None = None) -> DatasetInfo:
    coco = _load_json(path)
    root = Path(images) if images is not None else path.parent
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    names = [str(c["name"]) for c in categories]
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in coco["annotations"]:
        by_image[ann.get("image_id")].append(ann)
    records: list[Record] = []
    seen: set[Any] = set()
    for image in coco["images"]:
        records.append(_record(image, by_image.get(image.get("id"), []), root, index, names, seen))
    return DatasetInfo(records=records, class_names=names, source=path)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        coco = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}).") from None
    if not isinstance(coco, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(coco).__name__}.")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(f"{path}: key `{key}` missing.")
        if not isinstance(coco[key], list):
            raise DataError(f"{path}: `{key}` must be a list, got {type(coco[key]).__name__}.")
    for key in ("images", "annotations", "categories"):
        if not all(isinstance(item, dict) for item in coco[key]):
            raise DataError(f"{path}: every entry of `{key}` must be an object.")
    if not coco["categories"]:
        raise DataError(f"{path}: `categories` is empty.")
    if not all(isinstance(c.get("id"), int) and "name" in c for c in coco["categories"]):
        raise DataError(f"{path}: every category needs an integer `id` and a `name`.")
    return coco


def _record(
    image: dict[str, Any],
    anns: list[dict[str, Any]],
    root: Path,
    index: dict[int, int],
    names: list[str],
    seen: set[Any],
) -> Record:
    image_id = str(image.get("id"))
    file_name = str(image.get("file_name", ""))
    path = root / file_name
    height, width = image.get("height"), image.get("width")
    known = [a for a in anns if a.get("category_id") in index]

    def skipped(reason: SkipReason, detail: str) -> Record:
        return Record(image_id, path, -1, "", None, None, _no_mask, reason, detail)

    if image_id in seen:
        return skipped(SkipReason.DUPLICATE_ID, f"image id {image_id} appears more than once")
    seen.add(image_id)
    if not file_name or not _inside(root, path):
        return skipped(SkipReason.OUTSIDE_ROOT, f"file_name {file_name!r} escapes {root}")
    if not known:
        detail = "no annotation" if not anns else "category not in `categories`"
        return skipped(SkipReason.UNKNOWN_CATEGORY, detail)
    label = _largest_category(known)
    chosen = [a for a in known if a.get("category_id") == label]
    ok_size = isinstance(height, int) and isinstance(width, int)
    return Record(
        image_id=image_id,
        path=path,
        label=index[label],
        label_name=names[index[label]],
        height=height if ok_size else None,
        width=width if ok_size else None,
        decode_mask=_MaskDecoder(chosen),
    )


def _largest_category(anns: Sequence[dict[str, Any]]) -> int:
    area: dict[int, float] = defaultdict(float)
    for ann in anns:
        area[ann["category_id"]] += float(ann.get("area") or 0.0)
    return max(area, key=lambda c: (area[c], -c))


def _inside(root: Path, path: Path) -> bool:
    """True when ``path`` (following symlinks) stays inside ``root``."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _no_mask(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width), dtype=bool)


class _MaskDecoder:
    """Union of the annotations' segmentations (polygon or RLE), or boxes where none exist."""

    def __init__(self, anns: Sequence[dict[str, Any]]) -> None:
        self.anns = list(anns)

    def __call__(self, height: int, width: int) -> np.ndarray:
        mask = np.zeros((height, width), dtype=bool)
        for ann in self.anns:
            mask |= annotation_mask(ann, height, width)
        return mask


def annotation_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Bool ``[H, W]`` mask of one COCO annotation, clipped to the image."""
    segmentation = ann.get("segmentation")
    if segmentation:
        if isinstance(segmentation, list):
            rles = mask_utils.frPyObjects(segmentation, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return mask_utils.decode(rle).astype(bool)
    x, y, w, h = (float(v) for v in ann["bbox"])
    mask = np.zeros((height, width), dtype=bool)
    x0, y0 = max(round(x), 0), max(round(y), 0)
    mask[y0 : max(round(y + h), y0), x0 : max(round(x + w), x0)] = True
    return mask
