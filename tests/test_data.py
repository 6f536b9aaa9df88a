import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.data import AuditDataset, read_dataset
from auditor.data.coco import annotation_mask
from auditor.data.transforms import AuditTransform
from auditor.errors import DataError


def write_coco(folder: Path, images: list[dict], annotations: list[dict]) -> Path:
    path = folder / "annotations.json"
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
    }
    path.write_text(json.dumps(coco))
    return path


def box_ann(image_id: int, category: int, box: list[float]) -> dict:
    return {
        "id": image_id,
        "image_id": image_id,
        "category_id": category,
        "bbox": box,
        "area": box[2] * box[3],
        "iscrowd": 0,
    }


def test_classes_follow_category_id_and_masks_come_from_polygons(tmp_path):
    Image.new("RGB", (10, 8), "red").save(tmp_path / "x.png")
    poly = {
        "id": 1,
        "image_id": 1,
        "category_id": 7,
        "area": 12,
        "iscrowd": 0,
        "segmentation": [[2, 2, 6, 2, 6, 5, 2, 5]],
        "bbox": [2, 2, 4, 3],
    }
    info = read_dataset(
        write_coco(tmp_path, [{"id": 1, "file_name": "x.png", "height": 8, "width": 10}], [poly])
    )
    assert info.class_names == ["a", "b"]
    record = info.records[0]
    assert record.label == 1 and record.label_name == "b"
    mask = record.decode_mask(8, 10)
    assert mask[3, 3] and not mask[0, 0] and mask.sum() == 12


def test_box_mask_is_clipped_to_the_image():
    mask = annotation_mask({"bbox": [6, -2, 10, 5]}, 6, 8)
    assert mask.shape == (6, 8) and mask[:3, 6:].all() and mask.sum() == 6


def test_bad_samples_are_skipped_with_reasons(tmp_path):
    Image.new("RGB", (8, 8), "blue").save(tmp_path / "ok.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    images = [
        {"id": 1, "file_name": "ok.png", "height": 8, "width": 8},
        {"id": 2, "file_name": "missing.png", "height": 8, "width": 8},
        {"id": 3, "file_name": "empty.png", "height": 8, "width": 8},
        {"id": 4, "file_name": "junk.png", "height": 8, "width": 8},
        {"id": 5, "file_name": "../outside.png", "height": 8, "width": 8},
        {"id": 6, "file_name": "ok.png", "height": 9, "width": 8},
        {"id": 1, "file_name": "ok.png", "height": 8, "width": 8},
        {"id": 8, "file_name": "ok.png", "height": 8, "width": 8},
    ]
    anns = [box_ann(i, 3, [1, 1, 4, 4]) for i in range(1, 7)] + [box_ann(8, 99, [1, 1, 4, 4])]
    info = read_dataset(write_coco(tmp_path, images, anns))
    dataset = AuditDataset(info.records, AuditTransform(16))
    skips = [dataset[i]["skip"].split(":")[0] for i in range(len(dataset))]
    assert skips == [
        "",
        "missing_file",
        "empty_file",
        "unreadable_image",
        "outside_root",
        "size_mismatch",
        "duplicate_id",
        "unknown_category",
    ]
    ok = dataset[0]
    assert ok["inputs"].shape == (3, 16, 16) and ok["masks"].dtype.is_floating_point is False
    assert ok["masks"].float().mean() == pytest.approx(16 / 64)


def test_unusual_image_modes_are_converted(tmp_path):
    for mode, name in [
        ("L", "gray.png"),
        ("RGBA", "rgba.png"),
        ("I;16", "deep.png"),
        ("P", "pal.png"),
    ]:
        Image.new(mode, (8, 8)).save(tmp_path / name)
    images = [
        {"id": i, "file_name": n, "height": 8, "width": 8}
        for i, n in enumerate(["gray.png", "rgba.png", "deep.png", "pal.png"], 1)
    ]
    info = read_dataset(
        write_coco(tmp_path, images, [box_ann(i, 3, [0, 0, 4, 4]) for i in range(1, 5)])
    )
    dataset = AuditDataset(info.records, AuditTransform(8))
    assert all(dataset[i]["skip"] == "" for i in range(4))


@pytest.mark.parametrize("content,message", [
    ("{not json", "invalid JSON"),
    ('{"images": [], "annotations": []}', "key `categories` missing"),
    ('{"images": {}, "annotations": [], "categories": []}', "`images` must be a list"),
    ("[]", "expected a JSON object"),
])  # fmt: skip
def test_whole_file_problems_name_the_file(tmp_path, content, message):
    path = tmp_path / "annotations.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_dataset(path)
    assert "annotations.json" in str(info.value)


def test_mask_stays_binary_and_aligned_after_resize():
    transform = AuditTransform(20, normalize="none")
    image = Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8))
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 4:8] = True
    _, out = transform(image, mask)
    assert out.dtype.is_floating_point is False
    assert out[4:12, 8:16].all() and out.sum() == 64
