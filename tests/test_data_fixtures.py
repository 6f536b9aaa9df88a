"""Writers for small datasets in each format, with masks known by construction (no tests here)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, width: int, height: int, *, mode: str = "RGB", color=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), color if color is not None else 0).save(path)
    return path


def write_coco(
    folder: Path, images: list[dict], annotations: list[dict], categories: list[dict] | None = None
) -> Path:
    path = folder / "annotations.json"
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
    }
    path.write_text(json.dumps(coco))
    return path


def box_ann(image_id: int, category: int, box: list[float], **extra) -> dict:
    ann = {
        "id": image_id,
        "image_id": image_id,
        "category_id": category,
        "bbox": box,
        "area": box[2] * box[3],
        "iscrowd": 0,
    }
    return ann | extra


def write_voc(
    root: Path,
    name: str,
    objects: list[tuple[str, tuple[int, int, int, int]]],
    *,
    size: tuple[int, int] = (12, 10),
    filename: str | None = None,
) -> Path:
    """One VOC image ``name`` (width, height = size) with 1-based inclusive boxes."""
    width, height = size
    write_image(root / "JPEGImages" / f"{name}.png", width, height, color=(90, 90, 90))
    parts = [
        f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for label, (x0, y0, x1, y1) in objects
    ]
    xml = (
        f"<annotation><folder>VOC</folder><filename>{filename or name + '.png'}</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"{''.join(parts)}</annotation>"
    )
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    path = root / "Annotations" / f"{name}.xml"
    path.write_text(xml)
    return path


def write_label_png(path: Path, labels: np.ndarray) -> Path:
    """A palette PNG holding ``labels`` as indices, the way VOC stores its masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)])
    image.save(path)
    return path


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def expected_box(height: int, width: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[rows, cols] = True
    return mask
