"""From reader entries to records: the label policy, the class map, and class order.

Without a class map, model output ``i`` is the ``i``-th category in the reader's order (COCO:
sorted by id; VOC and CSV: sorted by name, or numerically when every name is an integer).
A class map (JSON object or two-column CSV ``category,index``) sends dataset categories,
by name or by key, to model output indices; a category it does not name is skipped with
``unmapped_category``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from auditor.data.entries import Category, ImageEntry, Instance, Record, SkipReason
from auditor.data.masks import UnionMask
from auditor.errors import DataError

LabelPolicy = Literal["single", "all"]
"""Images of several categories: audit the largest (``single``) or each (``all``)."""


def build_records(
    entries: Sequence[ImageEntry],
    categories: Sequence[Category],
    *,
    policy: LabelPolicy = "single",
    class_map: dict[str, int] | None = None,
    source: Path,
    map_source: Path | None = None,
) -> tuple[list[Record], list[str]]:
    """Records and class names. ``single``: one record per image, for the category of
    largest total area among those the model has (the rest go to ``other_labels``);
    ``all``: one record per category present."""
    if policy not in ("single", "all"):
        raise DataError(f"{source}: expected label policy single or all, got {policy!r}.")
    index, names = class_index(categories, class_map, source=map_source or source)
    label_names = {c.key: c.name for c in categories}
    records: list[Record] = []
    for entry in entries:
        records += _entry_records(entry, index, names, label_names, policy)
    return records, names


def class_index(
    categories: Sequence[Category], class_map: dict[str, int] | None, *, source: Path
) -> tuple[dict[str, int], list[str]]:
    """(category key -> model output index, class names in output order)."""
    if class_map is None:
        return {c.key: i for i, c in enumerate(categories)}, [c.name for c in categories]
    index = {c.key: class_map[c.name] for c in categories if c.name in class_map}
    index |= {
        c.key: class_map[c.key] for c in categories if c.key not in index and c.key in class_map
    }
    if categories and not index:
        found = ", ".join(c.name for c in categories[:8])
        raise DataError(
            f"{source}: the class map names none of the dataset's categories ({found})."
        )
    names = [f"class_{i}" for i in range(max(class_map.values(), default=-1) + 1)]
    for c in reversed(categories):
        if c.key in index:
            names[index[c.key]] = c.name
    return index, names


def _entry_records(
    entry: ImageEntry,
    index: dict[str, int],
    names: list[str],
    label_names: dict[str, str],
    policy: LabelPolicy,
) -> list[Record]:
    if entry.skip is not None:
        return [_skipped(entry, entry.skip, entry.skip_detail)]
    by_category: dict[str, list[Instance]] = defaultdict(list)
    for instance in entry.instances:
        by_category[instance.category].append(instance)
    if not by_category:
        return [_skipped(entry, SkipReason.NO_OBJECT, "no annotated object")]
    mapped = sorted((k for k in by_category if k in index), key=lambda k: (index[k], k))
    if policy == "all":
        return [
            _record(entry, k, by_category[k], index, names, ())
            if k in index
            else _unmapped(entry, [label_names[k]])
            for k in sorted(by_category, key=lambda k: (index.get(k, len(names)), k))
        ]
    if not mapped:
        return [_unmapped(entry, [label_names[k] for k in by_category])]
    area = {k: sum(i.area for i in by_category[k]) for k in mapped}
    label = max(mapped, key=lambda k: (area[k], -index[k]))
    others = tuple(label_names[k] for k in by_category if k != label)
    return [_record(entry, label, by_category[label], index, names, others)]


def _record(
    entry: ImageEntry,
    key: str,
    instances: list[Instance],
    index: dict[str, int],
    names: list[str],
    others: tuple[str, ...],
) -> Record:
    return Record(
        image_id=entry.image_id,
        path=entry.path,
        label=index[key],
        label_name=names[index[key]],
        height=entry.height,
        width=entry.width,
        decode_mask=UnionMask(tuple(i.decode for i in instances)),
        decode_ignore=entry.decode_ignore,
        other_labels=others,
        attributes=entry.attributes,
    )


def _unmapped(entry: ImageEntry, labels: list[str]) -> Record:
    detail = f"the class map has no output for {', '.join(labels)}"
    return _skipped(entry, SkipReason.UNMAPPED_CATEGORY, detail)


def _skipped(entry: ImageEntry, reason: SkipReason, detail: str) -> Record:
    return Record(
        image_id=entry.image_id,
        path=entry.path,
        label=-1,
        label_name="",
        height=None,
        width=None,
        decode_mask=UnionMask(()),
        skip=reason,
        skip_detail=detail,
    )


def load_class_map(path: str | Path) -> dict[str, int]:
    """Read ``{"category": index}`` JSON or a ``category,index`` CSV into a dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: class map cannot be read ({exc}).") from None
    raw = (
        _class_map_csv(path, text) if path.suffix.lower() == ".csv" else _class_map_json(path, text)
    )
    return _check_class_map(path, raw)


def _class_map_json(path: Path, text: str) -> Any:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}).") from None
    except (ValueError, RecursionError):  # a number too long for Python, or nesting too deep
        raise DataError(f"{path}: a number too long or nesting too deep to read.") from None
    if not isinstance(raw, dict):
        raise DataError(
            f"{path}: expected a JSON object {{category: index}}, got {type(raw).__name__}."
        )
    return raw


def _class_map_csv(path: Path, text: str) -> dict[str, Any]:
    try:
        rows = list(csv.DictReader(text.splitlines()))
    except csv.Error as exc:
        raise DataError(f"{path}: invalid CSV ({exc}).") from None
    if not rows or not {"category", "index"} <= set(rows[0]):
        raise DataError(f"{path}: expected CSV columns `category,index`.")
    raw: dict[str, Any] = {}
    for n, row in enumerate(rows, start=2):
        try:
            raw[str(row["category"])] = int(str(row["index"]))
        except ValueError:
            raise DataError(
                f"{path}: line {n}: index {row['index']!r} is not an integer."
            ) from None
    return raw


def _check_class_map(path: Path, raw: dict[str, Any]) -> dict[str, int]:
    if not raw:
        raise DataError(f"{path}: the class map is empty.")
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"{path}: `{key}` must map to an index >= 0, got {value!r}.")
    return {str(k): int(v) for k, v in raw.items()}
