"""CSV manifests: ``image,label`` plus a ``mask`` column (a PNG, non-zero = object) or box
columns ``x0,y0,x1,y1`` (0-based, half-open pixel edges: the box of COCO ``[x, y, w, h]`` is
``x, y, x+w, y+h``). Several rows for one image are several objects. An optional ``ignore``
column names a PNG whose non-zero pixels are left out of every metric. Image paths are
relative to ``images`` (default: the CSV's folder), mask paths to the CSV's folder.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from auditor.data.attributes import as_attributes
from auditor.data.entries import (
    Category,
    ImageEntry,
    Instance,
    SkipReason,
    name_order,
    skipped_entry,
)
from auditor.data.images import read_label_png, resolve_inside
from auditor.data.masks import BoxMask, PngMask, UnionMask
from auditor.errors import DataError

Entries = tuple[list[Category], list[ImageEntry]]
BOX = ("x0", "y0", "x1", "y1")
COLUMNS = frozenset({"image", "label", "mask", "ignore", *BOX})
"""The columns the reader reads; any other column is a per-image attribute (`--group-by`)."""
Row = dict[str, str]


class _RowError(ValueError):
    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def read_manifest(path: Path, *, images: str | Path | None = None) -> Entries:
    """Categories sorted by name (numerically when all are integers), one entry per image."""
    rows = _read_rows(path)
    image_root = Path(images) if images is not None else path.parent
    groups: dict[str, list[tuple[int, Row]]] = defaultdict(list)
    for line, row in rows:
        groups[row.get("image", "")].append((line, row))
    entries = [_entry(name, group, image_root, path.parent) for name, group in groups.items()]
    names = sorted({i.category for e in entries for i in e.instances}, key=name_order)
    return [Category(n, n) for n in names], entries


def _read_rows(path: Path) -> list[tuple[int, Row]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [(reader.line_num, _clean(row)) for row in reader]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc}).") from None
    except csv.Error as exc:
        raise DataError(f"{path}: invalid CSV ({exc}).") from None
    _check_columns(path, columns)
    return rows


def _clean(row: dict[str | None, str | list[str] | None]) -> Row:
    return {
        k.strip(): v.strip() for k, v in row.items() if isinstance(k, str) and isinstance(v, str)
    }


def _check_columns(path: Path, columns: list[str]) -> None:
    missing = [c for c in ("image", "label") if c not in columns]
    if missing:
        found = ",".join(columns) or "nothing"
        names = "`, `".join(missing)
        raise DataError(f"{path}: expected columns image,label; `{names}` missing (found {found}).")
    has_box = all(c in columns for c in BOX)
    if "mask" not in columns and not has_box:
        raise DataError(f"{path}: expected a `mask` column or box columns x0,y0,x1,y1.")


def _entry(name: str, group: list[tuple[int, Row]], image_root: Path, csv_root: Path) -> ImageEntry:
    line = group[0][0]
    image_id = name or f"line {line}"
    if not name:
        detail = f"line {line}: empty image path"
        return skipped_entry(image_id, image_root, SkipReason.BAD_ANNOTATION, detail)
    path = resolve_inside(image_root, name)
    if path is None:
        detail = f"image {name!r} (line {line}) escapes {image_root}"
        return skipped_entry(image_id, image_root / name, SkipReason.OUTSIDE_ROOT, detail)
    try:
        instances = tuple(_instance(row, csv_root, n) for n, row in group)
        ignore = _ignore(group, csv_root)
    except _RowError as exc:
        return skipped_entry(image_id, path, exc.reason, str(exc))
    if len({i.category for i in instances}) > 1:
        instances = tuple(_measured(i) for i in instances)
    extra = {k: v for k, v in group[0][1].items() if k not in COLUMNS}
    return ImageEntry(image_id, path, instances=instances, decode_ignore=ignore,
                      attributes=as_attributes(extra))  # fmt: skip


def _instance(row: Row, csv_root: Path, line: int) -> Instance:
    label = row.get("label", "")
    if not label:
        raise _RowError(SkipReason.BAD_ANNOTATION, f"line {line}: empty label")
    if row.get("mask"):
        return Instance(label, math.nan, PngMask(_inside(csv_root, row["mask"], line)))
    values = [row.get(c, "") for c in BOX]
    if not all(values):
        raise _RowError(SkipReason.BAD_ANNOTATION, f"line {line}: neither a mask nor a full box")
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except ValueError:
        raise _RowError(
            SkipReason.BAD_ANNOTATION, f"line {line}: box {values} is not numeric"
        ) from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
        raise _RowError(
            SkipReason.BAD_ANNOTATION, f"line {line}: box {values} is not x0<=x1, y0<=y1"
        )
    return Instance(label, (x1 - x0) * (y1 - y0), BoxMask((x0, y0, x1, y1)))


def _ignore(group: list[tuple[int, Row]], csv_root: Path) -> UnionMask | None:
    parts = tuple(PngMask(_inside(csv_root, r["ignore"], n)) for n, r in group if r.get("ignore"))
    return UnionMask(parts) if parts else None


def _inside(csv_root: Path, name: str, line: int) -> Path:
    path = resolve_inside(csv_root, name)
    if path is None:
        raise _RowError(SkipReason.OUTSIDE_ROOT, f"line {line}: mask {name!r} escapes {csv_root}")
    return path


def _measured(instance: Instance) -> Instance:
    """A mask instance with its pixel count as area (only needed to rank categories)."""
    if not math.isnan(instance.area) or not isinstance(instance.decode, PngMask):
        return instance
    try:
        area = float((read_label_png(instance.decode.path) != 0).sum())
    except Exception:  # an unreadable mask is reported when the sample loads
        area = 0.0
    return Instance(instance.category, area, instance.decode)
