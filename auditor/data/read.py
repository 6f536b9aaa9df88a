"""Read a dataset in any supported format: the format switch, then labels and class order.

COCO JSON files, Pascal VOC root folders and CSV manifests each give entries
(:mod:`auditor.data.entries`); :mod:`auditor.data.labels` turns them into one
:class:`~auditor.data.entries.Record` per audited (image, label).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditor.data.attributes import read_side_file, with_side_file
from auditor.data.entries import Category, ImageEntry, Record
from auditor.data.labels import LabelPolicy, build_records, load_class_map
from auditor.errors import DataError


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
    attributes: str | Path | None = None,
) -> DatasetInfo:
    """Read a COCO JSON file, a Pascal VOC root folder or a CSV manifest.

    ``images`` is the image root (default: the file's folder; VOC: ``JPEGImages``), ``split``
    the VOC image set, ``label_policy`` and ``class_map`` as in :func:`build_records`,
    ``attributes`` a side file of per-image attributes (:mod:`auditor.data.attributes`).
    """
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
    if attributes is not None:
        records = with_side_file(records, read_side_file(attributes))
    return DatasetInfo(records=records, class_names=names, source=path)


def _read_entries(
    path: Path, *, images: str | Path | None, split: str | None
) -> tuple[list[Category], list[ImageEntry]]:
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
