import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pycocotools import mask as mask_utils
from test_data_fixtures import box_ann, write_coco

from auditor.data import AuditDataset, read_dataset
from auditor.data.coco import annotation_mask
from auditor.data.masks import rle_counts
from auditor.data.transforms import AuditTransform
from auditor.errors import DataError


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
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    files = {
        "gray.png": Image.new("L", (8, 8), 200),
        "rgba.png": Image.new("RGBA", (8, 8), (255, 0, 0, 255)),
        "la.png": Image.new("LA", (8, 8), (90, 255)),
        "deep.png": Image.fromarray(ramp),
        "pal.png": Image.new("P", (8, 8), 3),
        "cmyk.jpg": Image.new("CMYK", (8, 8), (0, 255, 255, 0)),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    with Image.open(tmp_path / "deep.png") as deep_file:
        assert deep_file.mode.startswith("I")
    images = [{"id": i, "file_name": n, "height": 8, "width": 8} for i, n in enumerate(files, 1)]
    anns = [box_ann(i, 3, [0, 0, 4, 4]) for i in range(1, len(files) + 1)]
    info = read_dataset(write_coco(tmp_path, images, anns))
    dataset = AuditDataset(info.records, AuditTransform(8, normalize="none"))
    samples = [dataset[i] for i in range(len(files))]
    assert [s["skip"] for s in samples] == [""] * len(files)
    assert samples[0]["inputs"][:, 0, 0].tolist() == pytest.approx([200 / 255] * 3)
    assert samples[1]["inputs"][:, 0, 0].tolist() == pytest.approx([1, 0, 0])
    deep = samples[3]["inputs"][0]
    assert deep[0, 0] == 0 and deep[7, 7] == 1 and len(deep.unique()) > 32
    assert samples[5]["inputs"][0, 0, 0] > 0.9 > 0.1 > samples[5]["inputs"][1, 0, 0]


def test_truncated_image_is_skipped(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    images = [{"id": 1, "file_name": "cut.png", "height": 64, "width": 64}]
    info = read_dataset(write_coco(tmp_path, images, [box_ann(1, 3, [0, 0, 4, 4])]))
    assert AuditDataset(info.records, AuditTransform(16))[0]["skip"].startswith("unreadable_image")


def test_truncated_image_is_skipped_even_when_pil_is_told_to_accept_it(tmp_path, monkeypatch):
    """weasyprint sets this process-wide flag on import; our decoding must not follow it."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    test_truncated_image_is_skipped(tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after decoding


@pytest.mark.parametrize("name,content,message", [
    ("annotations.json", "{not json", "invalid JSON"),
    ("annotations.json", '{"images": [], "annotations": []}', "key `categories` missing"),
    ("annotations.json", '{"images": {}, "annotations": [], "categories": []}',
     "`images` must be a list"),
    ("annotations.json", "[]", "expected a JSON object"),
    ("manifest.csv", "image,mask\n", "`label` missing"),
    ("manifest.csv", "file,label,mask\n", "`image` missing"),
    ("manifest.csv", "image,label,x0,y0\n", "`mask` column or box columns"),
    ("manifest.csv", "", "`image`, `label` missing"),
])  # fmt: skip
def test_whole_file_problems_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_dataset(path)
    assert name in str(info.value)


def test_mask_stays_binary_and_aligned_after_resize():
    transform = AuditTransform(20, normalize="none")
    image = Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8))
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:6, 4:8] = True
    _, out = transform(image, mask)
    assert out.dtype.is_floating_point is False
    assert out[4:12, 8:16].all() and out.sum() == 64


@settings(max_examples=30, deadline=None)
@given(
    mask=arrays(
        np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1)
    )
)
def test_python_rle_parser_matches_pycocotools(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    counts = rle_counts(rle["counts"].decode("ascii"))
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))
    assert counts == np.diff(np.concatenate([[0], changes])).tolist()[: len(counts)]
    assert sum(counts) == mask.size
