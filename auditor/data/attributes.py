"""Per-image attributes for group audits (``--group-by``): where they come from and how they
are checked.

- COCO: ``images[i].attributes``, an object of scalars;
- CSV manifest: every column besides ``image,label,mask,x0,y0,x1,y1,ignore``;
- a side file (``--attributes FILE``), CSV ``image,attribute,value``, where ``image`` is the
  image id or the image's file name; its values win over the annotations'.

Values are kept as text. An image without a value for a grouped attribute is put in the
group ``missing`` and counted, never dropped.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auditor.data.entries import Attributes, Record
from auditor.errors import DataError

MISSING = "missing"


def as_attributes(raw: Mapping[str, Any]) -> Attributes:
    """Scalars as text (true/false for booleans), sorted by name; other values are left out."""
    pairs = []
    for name, value in raw.items():
        if isinstance(value, bool):
            pairs.append((str(name), "true" if value else "false"))
        elif isinstance(value, str | int | float):
            pairs.append((str(name), str(value)))
    return tuple(sorted(pairs))


def read_side_file(path: str | Path) -> dict[str, dict[str, str]]:
    """``image -> {attribute: value}`` from a CSV ``image,attribute,value``."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: attributes cannot be read ({exc}).") from None
    except csv.Error as exc:
        raise DataError(f"{path}: invalid CSV ({exc}).") from None
    if not {"image", "attribute", "value"} <= set(columns):
        raise DataError(f"{path}: expected CSV columns image,attribute,value.")
    table: dict[str, dict[str, str]] = defaultdict(dict)
    for line, row in enumerate(rows, start=2):
        image, name = (row.get("image") or "").strip(), (row.get("attribute") or "").strip()
        if not image or not name:
            raise DataError(f"{path}: line {line}: empty image or attribute.")
        table[image][name] = (row.get("value") or "").strip()
    return dict(table)


def with_side_file(
    records: Sequence[Record], table: Mapping[str, Mapping[str, str]]
) -> list[Record]:
    """Records with the side file's attributes merged in, matched by image id or file name."""
    out = []
    for record in records:
        extra = table.get(record.image_id) or table.get(record.path.name) or {}
        merged = dict(record.attributes) | dict(extra)
        out.append(dataclasses.replace(record, attributes=tuple(sorted(merged.items()))))
    return out


def check_group_by(records: Iterable[Record], group_by: Sequence[str], *, source: Path) -> None:
    """Every grouped attribute must be known to at least one image."""
    known = {name for r in records for name, _ in r.attributes}
    unknown = [name for name in group_by if name not in known]
    if unknown:
        found = ", ".join(sorted(known)[:12]) or "none"
        raise DataError(
            f"{source}: no image has the attribute {', '.join(unknown)} (--group-by); "
            f"attributes found: {found}."
        )


def group_value(record: Record, name: str) -> str:
    value = record.attribute(name)
    return MISSING if value is None or value == "" else value
