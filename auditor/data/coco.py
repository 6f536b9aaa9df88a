"""COCO annotation files: images, categories, object instances and crowd ignore regions.

Instances come from polygons, compressed or uncompressed RLE, or ``bbox`` where there is no
segmentation. ``iscrowd`` annotations are ignore regions, never objects. Categories are in
id order, so class ``i`` is the ``i``-th category sorted by id (see :mod:`auditor.data.labels`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from auditor.data.attributes import as_attributes
from auditor.data.entries import Category, ImageEntry, Instance, SkipReason, skipped_entry
from auditor.data.images import resolve_inside
from auditor.data.masks import CocoMask, UnionMask, coco_mask
from auditor.errors import DataError

Entries = tuple[list[Category], list[ImageEntry]]


TOO_LONG_NUMBER = "holds a number with more digits than a JSON reader accepts (4,300)"


def read_coco(path: Path, *, images: str | Path | None = None) -> Entries:
    """Categories sorted by id and one entry per ``images`` item, in file order."""
    coco = _load_json(path)
    root = Path(images) if images is not None else path.parent
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    known = {c["id"] for c in categories}
    by_image, orphans = _annotations_by_image(coco["annotations"], path)
    entries: list[ImageEntry] = []
    seen: set[Any] = set()
    for image in coco["images"]:
        key = _key(image.get("id"))
        entries.append(_entry(image, by_image.get(key, []), root, known, seen))
    entries += _orphans(by_image, orphans, seen, path)
    return [Category(str(c["id"]), str(c["name"])) for c in categories], entries


def _load_json(path: Path) -> dict[str, Any]:
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}).") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply.") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise DataError(f"{path}: {TOO_LONG_NUMBER}.") from None
    if not isinstance(coco, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(coco).__name__}.")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DataError(f"{path}: key `{key}` missing.")
        if not isinstance(coco[key], list):
            raise DataError(f"{path}: `{key}` must be a list, got {type(coco[key]).__name__}.")
        if not all(isinstance(item, dict) for item in coco[key]):
            raise DataError(f"{path}: every entry of `{key}` must be an object.")
    _check_categories(path, coco["categories"])
    return coco


def _check_categories(path: Path, categories: list[dict[str, Any]]) -> None:
    if not categories:
        raise DataError(f"{path}: `categories` is empty.")
    for c in categories:
        if not _is_int(c.get("id")) or not isinstance(c.get("name"), str | int):
            raise DataError(
                f"{path}: every category needs an integer `id` and a `name`, got {c!r:.80}."
            )
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: category ids repeat in `categories`.")


def _annotations_by_image(
    anns: list[dict[str, Any]], path: Path
) -> tuple[dict[Any, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Annotations grouped by image id, and those without a usable ``image_id``."""
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    orphans = []
    for ann in anns:
        key = _key(ann.get("image_id"))
        if key is None:
            orphans.append(ann)
        else:
            by_image[key].append(ann)
    return by_image, orphans


def _orphans(
    by_image: dict[Any, list[dict[str, Any]]],
    orphans: list[dict[str, Any]],
    listed: set[Any],
    path: Path,
) -> list[ImageEntry]:
    """One skipped entry per image id that annotations name but ``images`` does not list,
    and per annotation without a usable ``image_id``: dropped annotations are counted."""
    entries = []
    for key, anns in by_image.items():
        if key not in listed:
            detail = f"{len(anns)} annotation(s) refer to image id {key!r}, which `images` lacks"
            entries.append(skipped_entry(str(key), path, SkipReason.UNKNOWN_IMAGE, detail))
    for ann in orphans:
        detail = f"annotation id {ann.get('id')!r:.40} has no usable `image_id`"
        entries.append(skipped_entry("", path, SkipReason.BAD_ANNOTATION, detail))
    return entries


def _entry(
    image: dict[str, Any],
    anns: list[dict[str, Any]],
    root: Path,
    known: set[int],
    seen: set[Any],
) -> ImageEntry:
    image_id = str(image.get("id"))
    path = _locate(image, root, seen)
    if isinstance(path, ImageEntry):
        return path
    objects = [a for a in anns if not _crowd(a)]
    instances = [_instance(a) for a in objects if _key(a.get("category_id")) in known]
    if objects and not instances:
        detail = "category not in `categories`"
        return skipped_entry(image_id, path, SkipReason.UNKNOWN_CATEGORY, detail)
    crowds = tuple(CocoMask(a) for a in anns if _crowd(a))
    height, width = image.get("height"), image.get("width")
    ok_size = _is_int(height) and _is_int(width)
    attributes = image.get("attributes", {})
    if not isinstance(attributes, dict):
        detail = f"`attributes` must be an object, got {type(attributes).__name__}"
        return skipped_entry(image_id, path, SkipReason.BAD_ANNOTATION, detail)
    return ImageEntry(
        image_id=image_id,
        path=path,
        height=height if ok_size else None,
        width=width if ok_size else None,
        instances=tuple(instances),
        decode_ignore=UnionMask(crowds) if crowds else None,
        attributes=as_attributes(attributes),
    )


def _locate(image: dict[str, Any], root: Path, seen: set[Any]) -> Path | ImageEntry:
    """The image's path inside ``root``, or a skipped entry saying why there is none."""
    key, file_name = _key(image.get("id")), image.get("file_name")
    image_id, path = str(image.get("id")), root / str(file_name or "")
    if key is None:
        return skipped_entry(image_id, path, SkipReason.BAD_ANNOTATION, "image without an `id`")
    if key in seen:
        detail = f"image id {image_id} appears more than once"
        return skipped_entry(image_id, path, SkipReason.DUPLICATE_ID, detail)
    seen.add(key)
    if not isinstance(file_name, str) or not file_name:
        detail = f"`file_name` must be a non-empty string, got {file_name!r:.40}"
        return skipped_entry(image_id, path, SkipReason.BAD_ANNOTATION, detail)
    inside = resolve_inside(root, file_name)
    if inside is None:
        detail = f"file_name {file_name!r} escapes {root}"
        return skipped_entry(image_id, path, SkipReason.OUTSIDE_ROOT, detail)
    return inside


def _crowd(ann: dict[str, Any]) -> bool:
    return ann.get("iscrowd") in (1, True)


def _instance(ann: dict[str, Any]) -> Instance:
    return Instance(category=str(ann["category_id"]), area=_area(ann), decode=CocoMask(ann))


def _area(ann: dict[str, Any]) -> float:
    """The annotation's ``area``, else its box area, else 0 (only used to rank categories)."""
    area = ann.get("area")
    if isinstance(area, int | float) and not isinstance(area, bool) and math.isfinite(area):
        return float(area)
    box = ann.get("bbox")
    try:
        value = float(box[2]) * float(box[3])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _key(value: Any) -> int | str | None:
    """A hashable id (int or str), or None for anything else."""
    return value if _is_int(value) or isinstance(value, str) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def annotation_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """Bool ``[H, W]`` mask of one COCO annotation, clipped to the image."""
    return coco_mask(ann, height, width)
