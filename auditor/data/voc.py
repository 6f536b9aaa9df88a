"""Pascal VOC roots: ``Annotations/*.xml`` boxes, ``SegmentationObject`` / ``SegmentationClass``
PNG masks where they exist, and the 255 border label as an ignore region.

Boxes are 1-based and inclusive (``xmin=1, xmax=4`` covers the first four pixel columns).
``SegmentationObject`` values ``1..N`` are the XML's objects in order; ``SegmentationClass``
values are indices into :data:`VOC_CLASSES`. The image set is ``ImageSets/Main/<split>.txt``,
else ``ImageSets/Segmentation/<split>.txt``; without ``split``, every XML file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from auditor.data.entries import (
    Category,
    ImageEntry,
    Instance,
    MaskDecoder,
    SkipReason,
    name_order,
    skipped_entry,
)
from auditor.data.images import resolve_inside
from auditor.data.masks import BoxMask, PngMask
from auditor.errors import DataError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
BORDER = 255

Entries = tuple[list[Category], list[ImageEntry]]


def read_voc(root: Path, *, images: str | Path | None = None, split: str | None = None) -> Entries:
    """Categories sorted by name and one entry per image of the image set."""
    if not (root / "Annotations").is_dir():
        raise DataError(f"{root}: not a Pascal VOC root (expected an `Annotations` folder).")
    image_root = Path(images) if images is not None else root / "JPEGImages"
    entries = _entries(root, image_root, image_set(root, split))
    names = sorted({i.category for e in entries for i in e.instances}, key=name_order)
    return [Category(n, n) for n in names], entries


def _entries(root: Path, image_root: Path, names: list[str]) -> list[ImageEntry]:
    entries, seen = [], set()
    for name in names:
        if name in seen:
            detail = f"{name} is listed more than once"
            entries.append(skipped_entry(name, root / name, SkipReason.DUPLICATE_ID, detail))
        else:
            seen.add(name)
            entries.append(_entry(root, image_root, name))
    return entries


def image_set(root: Path, split: str | None) -> list[str]:
    """Image names of ``split`` (first column of its list file), or of every XML file."""
    if split is None:
        names = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
        if not names:
            raise DataError(f"{root / 'Annotations'}: no .xml annotation files.")
        return names
    candidates = [root / "ImageSets" / sub / f"{split}.txt" for sub in ("Main", "Segmentation")]
    listing = next((p for p in candidates if p.is_file()), None)
    if listing is None or "/" in split or "\\" in split:
        expected = " or ".join(str(p.relative_to(root)) for p in candidates)
        raise DataError(f"{root}: split {split!r} not found (expected {expected}).")
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{listing}: cannot be read ({exc}).") from None
    return [line.split()[0] for line in lines if line.strip()]


def _entry(root: Path, image_root: Path, name: str) -> ImageEntry:
    xml = resolve_inside(root / "Annotations", f"{name}.xml")
    if xml is None:
        return skipped_entry(name, root / name, SkipReason.OUTSIDE_ROOT, f"{name!r} escapes {root}")
    if not xml.is_file():
        detail = f"Annotations/{name}.xml not found"
        return skipped_entry(name, xml, SkipReason.MISSING_ANNOTATION, detail)
    try:
        tree = ET.parse(xml).getroot()
        file_name = tree.findtext("filename") or f"{name}.jpg"
        height, width = _size(tree)
        boxes = [_object(obj) for obj in tree.iter("object")]
    except (ET.ParseError, ValueError, OverflowError, OSError) as exc:
        return skipped_entry(name, xml, SkipReason.BAD_ANNOTATION, f"{xml.name}: {exc}")
    path = resolve_inside(image_root, file_name.strip())
    if path is None:
        detail = f"filename {file_name!r} escapes {image_root}"
        return skipped_entry(name, image_root, SkipReason.OUTSIDE_ROOT, detail)
    instances, ignore = _instances(root, name, boxes)
    return ImageEntry(name, path, height, width, tuple(instances), ignore)


def _size(tree: ET.Element) -> tuple[int | None, int | None]:
    height, width = tree.findtext("size/height"), tree.findtext("size/width")
    if height is None or width is None:
        return None, None
    try:
        h, w = int(float(height)), int(float(width))
    except (ValueError, OverflowError):  # not a number, or one beyond any image size
        return None, None
    return (h, w) if h > 0 and w > 0 else (None, None)


def _object(obj: ET.Element) -> tuple[str, tuple[float, float, float, float]]:
    """(class name, box in the half-open convention of :func:`auditor.data.masks.box_mask`)."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise ValueError("an <object> without a <name>")
    corners = [obj.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
    if any(c is None for c in corners):
        raise ValueError(f"object {name!r} without a complete <bndbox>")
    x0, y0, x1, y1 = (float(c) for c in corners)  # type: ignore[arg-type]
    if not all(abs(v) < 1e9 for v in (x0, y0, x1, y1)):
        raise ValueError(f"object {name!r} has a non-finite box")
    return name, (x0 - 1, y0 - 1, x1, y1)


def _instances(
    root: Path, name: str, boxes: list[tuple[str, tuple[float, float, float, float]]]
) -> tuple[list[Instance], PngMask | None]:
    """Per-object masks from the best source present: object PNG, class PNG, else boxes."""
    objects, classes = (
        root / sub / f"{name}.png" for sub in ("SegmentationObject", "SegmentationClass")
    )
    instances = []
    decode: MaskDecoder
    for k, (label, box) in enumerate(boxes, start=1):
        area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
        if objects.is_file():
            decode = PngMask(objects, (k,))
        elif classes.is_file() and label in VOC_CLASSES:
            decode = PngMask(classes, (VOC_CLASSES.index(label) + 1,))
        else:
            decode = BoxMask(box)
        instances.append(Instance(label, area, decode))
    png = objects if objects.is_file() else classes if classes.is_file() else None
    return instances, PngMask(png, (BORDER,)) if png is not None else None
