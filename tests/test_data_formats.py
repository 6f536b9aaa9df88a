"""COCO, Pascal VOC and CSV readers: the same object gives the same mask in every format."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from test_data_fixtures import (
    box_ann,
    expected_box,
    write_coco,
    write_csv,
    write_image,
    write_label_png,
    write_voc,
)

from auditor.data import AuditDataset, read_dataset
from auditor.data.images import load_image
from auditor.data.transforms import AuditTransform
from auditor.errors import DataError

H, W = 10, 12


def reasons(info, size=8):
    dataset = AuditDataset(info.records, AuditTransform(size))
    return [dataset[i]["skip"].split(":")[0] for i in range(len(dataset))]


def identity_dataset(info):
    """Samples at the images' own size (square images), so masks come back unresampled."""
    return AuditDataset(info.records, AuditTransform(W, normalize="none"))


def three_formats(tmp_path):
    """One 12x10 image with one box covering rows 1..3 and columns 2..5, in every format."""
    coco = tmp_path / "coco"
    write_image(coco / "x.png", W, H)
    ann = box_ann(1, 3, [2, 1, 4, 3])
    coco_path = write_coco(coco, [{"id": 1, "file_name": "x.png", "height": H, "width": W}], [ann])
    voc = tmp_path / "voc"
    write_voc(voc, "x", [("a", (3, 2, 6, 4))], size=(W, H))
    manifest = tmp_path / "csv"
    write_image(manifest / "x.png", W, H)
    row = {"image": "x.png", "label": "a", "x0": 2, "y0": 1, "x1": 6, "y1": 4}
    csv_path = write_csv(manifest / "data.csv", [row], ["image", "label", "x0", "y0", "x1", "y1"])
    return {"coco": coco_path, "voc": voc, "csv": csv_path}


def test_a_box_gives_one_mask_in_coco_voc_and_csv(tmp_path):
    expected = expected_box(H, W, slice(1, 4), slice(2, 6))
    samples = {}
    for fmt, data in three_formats(tmp_path).items():
        info = read_dataset(data)
        assert info.class_names == ["a"] if fmt != "coco" else ["a", "b"]
        record = info.records[0]
        assert record.label_name == "a"
        np.testing.assert_array_equal(record.decode_mask(H, W), expected, err_msg=fmt)
        samples[fmt] = AuditDataset(info.records, AuditTransform(32))[0]
    for fmt in ("voc", "csv"):
        assert samples[fmt]["skip"] == ""
        assert samples[fmt]["masks"].equal(samples["coco"]["masks"]), fmt
        assert not samples[fmt]["ignore"].any()


def test_coco_compressed_and_uncompressed_rle(tmp_path):
    write_image(tmp_path / "x.png", W, H)
    expected = expected_box(H, W, slice(2, 7), slice(3, 5))
    compressed = mask_utils.encode(np.asfortranarray(expected.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode("ascii")
    flat = expected.flatten(order="F").astype(int)
    runs, value, count = [], 0, 0
    for pixel in flat:
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    images = [{"id": i, "file_name": "x.png", "height": H, "width": W} for i in (1, 2)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": compressed, "area": 10},
        {"id": 2, "image_id": 2, "category_id": 3, "area": 10,
         "segmentation": {"size": [H, W], "counts": runs}},
    ]  # fmt: skip
    info = read_dataset(write_coco(tmp_path, images, anns))
    for record in info.records:
        np.testing.assert_array_equal(record.decode_mask(H, W), expected)


def test_coco_crowd_is_an_ignore_region_not_an_object(tmp_path):
    write_image(tmp_path / "x.png", W, W)
    crowd = np.zeros((W, W), dtype=np.uint8)
    crowd[6:, :] = 1
    rle = mask_utils.encode(np.asfortranarray(crowd))
    rle["counts"] = rle["counts"].decode("ascii")
    images = [{"id": i, "file_name": "x.png", "height": W, "width": W} for i in (1, 2)]
    anns = [
        box_ann(1, 3, [0, 0, 4, 8]),
        {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 1, "segmentation": rle, "area": 72},
        {"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 1, "segmentation": rle, "area": 72},
    ]
    info = read_dataset(write_coco(tmp_path, images, anns))
    assert info.records[0].label_name == "a"
    sample = identity_dataset(info)[0]
    expected_ignore = crowd.astype(bool) & ~expected_box(W, W, slice(0, 8), slice(0, 4))
    np.testing.assert_array_equal(sample["ignore"].numpy(), expected_ignore)
    assert sample["masks"].sum() == 32
    assert identity_dataset(info)[1]["skip"].startswith("no_object")


def test_coco_polygon_partly_outside_is_clipped_and_outside_is_empty(tmp_path):
    write_image(tmp_path / "x.png", W, H)
    images = [{"id": i, "file_name": "x.png", "height": H, "width": W} for i in (1, 2, 3)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "area": 1,
         "segmentation": [[8, 5, 20, 5, 20, 20, 8, 20]]},
        {"id": 2, "image_id": 2, "category_id": 3, "area": 1,
         "segmentation": [[30, 30, 40, 30, 40, 40]]},
        box_ann(3, 3, [4, 4, 0, 0]),
    ]  # fmt: skip
    info = read_dataset(write_coco(tmp_path, images, anns))
    np.testing.assert_array_equal(
        info.records[0].decode_mask(H, W), expected_box(H, W, slice(5, H), slice(8, W))
    )
    assert reasons(info) == ["", "empty_mask", "empty_mask"]


def test_coco_malformed_masks_cost_one_sample(tmp_path):
    write_image(tmp_path / "x.png", W, H)
    images = [{"id": i, "file_name": "x.png", "height": H, "width": W} for i in range(1, 6)]
    segs = [
        {"size": [H, W], "counts": [5, 3]},
        {"size": [H, W], "counts": "not rle ~~"},
        {"size": [H + 1, W], "counts": [(H + 1) * W]},
        [[1, 2, 3]],
        [[0, 0, 1e12, 0, 5, 5]],
    ]
    anns = [{"id": i, "image_id": i, "category_id": 3, "segmentation": s, "area": 1}
            for i, s in enumerate(segs, 1)]  # fmt: skip
    info = read_dataset(write_coco(tmp_path, images, anns))
    assert reasons(info) == [
        "bad_annotation", "bad_annotation", "size_mismatch", "bad_annotation", "bad_annotation",
    ]  # fmt: skip


def test_paths_escaping_the_root_are_refused_before_reading(tmp_path):
    root = tmp_path / "root"
    write_image(tmp_path / "secret.png", W, H)
    write_image(root / "ok.png", W, H)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    names = ["ok.png", "../secret.png", str(tmp_path / "secret.png"), "link.png", "C:\\x.png"]
    images = [{"id": i, "file_name": n, "height": H, "width": W} for i, n in enumerate(names, 1)]
    anns = [box_ann(i, 3, [1, 1, 3, 3]) for i in range(1, 6)]
    info = read_dataset(write_coco(root, images, anns))
    assert reasons(info) == ["", "outside_root", "outside_root", "outside_root", "outside_root"]


def test_voc_object_png_border_is_ignore_and_largest_category_wins(tmp_path):
    size = 12
    write_voc(tmp_path, "2007_1", [("dog", (1, 1, 4, 4)), ("person", (6, 1, 12, 12)),
                                   ("dog", (1, 9, 3, 12))], size=(size, size))  # fmt: skip
    labels = np.zeros((size, size), dtype=np.uint8)
    labels[0:4, 0:4] = 1
    labels[0:12, 6:12] = 2
    labels[9:12, 0:3] = 3
    labels[4, 0:4] = 255
    write_label_png(tmp_path / "SegmentationObject" / "2007_1.png", labels)
    info = read_dataset(tmp_path)
    assert info.class_names == ["dog", "person"]
    record = info.records[0]
    assert record.label_name == "person" and record.other_labels == ("dog",)
    sample = identity_dataset_of(info, size)[0]
    np.testing.assert_array_equal(sample["masks"].numpy(), labels == 2)
    np.testing.assert_array_equal(sample["ignore"].numpy(), labels == 255)
    all_info = read_dataset(tmp_path, label_policy="all")
    assert [r.label_name for r in all_info.records] == ["dog", "person"]
    dog = identity_dataset_of(all_info, size)[0]
    np.testing.assert_array_equal(dog["masks"].numpy(), (labels == 1) | (labels == 3))


def identity_dataset_of(info, size):
    return AuditDataset(info.records, AuditTransform(size, normalize="none"))


def test_voc_class_png_and_split_files(tmp_path):
    write_voc(tmp_path, "a", [("cat", (1, 1, 5, 5))], size=(W, H))
    write_voc(tmp_path, "b", [("cat", (2, 2, 4, 4))], size=(W, H))
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[2:5, 3:9] = 8  # VOC class 8 is "cat"
    labels[5, :] = 255
    write_label_png(tmp_path / "SegmentationClass" / "a.png", labels)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a  1\nmissing -1\na 1\n")
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("b\n")
    train = read_dataset(tmp_path, split="train")
    assert [r.image_id for r in train.records] == ["a", "missing", "a"]
    assert reasons(train) == ["", "missing_annotation", "duplicate_id"]
    np.testing.assert_array_equal(train.records[0].decode_mask(H, W), labels == 8)
    assert [r.image_id for r in read_dataset(tmp_path, split="val").records] == ["b"]
    with pytest.raises(DataError, match=r"ImageSets/Main/test\.txt"):
        read_dataset(tmp_path, split="test")


def test_voc_per_image_problems(tmp_path):
    write_voc(tmp_path, "ok", [("cat", (1, 1, 5, 5))], size=(W, H))
    write_voc(tmp_path, "escape", [("cat", (1, 1, 5, 5))], size=(W, H), filename="../../x.png")
    write_voc(tmp_path, "empty", [], size=(W, H))
    write_voc(tmp_path, "wrongmask", [("cat", (1, 1, 5, 5))], size=(W, H))
    write_label_png(tmp_path / "SegmentationObject" / "wrongmask.png", np.ones((3, 3)))
    (tmp_path / "Annotations" / "broken.xml").write_text("<annotation><object>")
    info = read_dataset(tmp_path)
    got = dict(zip([r.image_id for r in info.records], reasons(info)))
    assert got == {"broken": "bad_annotation", "empty": "no_object", "escape": "outside_root",
                   "ok": "", "wrongmask": "size_mismatch"}  # fmt: skip


def test_voc_root_without_annotations_is_a_data_error(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DataError, match="Annotations"):
        read_dataset(tmp_path)


def test_csv_masks_boxes_and_multi_object_union(tmp_path):
    write_image(tmp_path / "img" / "x.png", W, H)
    write_image(tmp_path / "img" / "y.png", W, H)
    drawn = np.zeros((H, W), dtype=np.uint8)
    drawn[3:6, 1:4] = 255
    write_image(tmp_path / "masks" / "x.png", W, H, mode="L")
    from PIL import Image

    Image.fromarray(drawn).save(tmp_path / "masks" / "x.png")
    columns = ["image", "label", "mask", "x0", "y0", "x1", "y1"]
    rows = [
        {"image": "img/x.png", "label": "cat", "mask": "masks/x.png"},
        {"image": "img/y.png", "label": "dog", "x0": 0, "y0": 0, "x1": 2, "y1": 2},
        {"image": "img/y.png", "label": "dog", "x0": 5, "y0": 5, "x1": 7, "y1": 8},
        {"image": "img/y.png", "label": "cat", "x0": 8, "y0": 0, "x1": 9, "y1": 1},
    ]
    info = read_dataset(write_csv(tmp_path / "data.csv", rows, columns))
    assert info.class_names == ["cat", "dog"]
    np.testing.assert_array_equal(info.records[0].decode_mask(H, W), drawn > 0)
    y = info.records[1]
    assert y.label_name == "dog" and y.other_labels == ("cat",)
    union = expected_box(H, W, slice(0, 2), slice(0, 2)) | expected_box(
        H, W, slice(5, 8), slice(5, 7)
    )
    np.testing.assert_array_equal(y.decode_mask(H, W), union)


def test_csv_per_row_problems(tmp_path):
    write_image(tmp_path / "x.png", W, H)
    write_image(tmp_path / "small.png", 3, 3, mode="L")
    columns = ["image", "label", "mask", "x0", "y0", "x1", "y1"]
    rows = [
        {"image": "x.png", "label": "a", "mask": "small.png"},
        {"image": "../x.png", "label": "a", "x0": 0, "y0": 0, "x1": 2, "y1": 2},
        {"image": "y.png", "label": "a", "mask": "../m.png"},
        {"image": "z.png", "label": "a", "x0": "left", "y0": 0, "x1": 2, "y1": 2},
        {"image": "w.png", "label": "a"},
        {"image": "v.png", "label": "a", "x0": 0, "y0": 0, "x1": 2, "y1": 2},
    ]
    info = read_dataset(write_csv(tmp_path / "data.csv", rows, columns))
    assert reasons(info) == [
        "size_mismatch", "outside_root", "outside_root", "bad_annotation", "bad_annotation",
        "missing_file",
    ]  # fmt: skip


def test_class_map_json_and_csv(tmp_path):
    write_image(tmp_path / "x.png", W, H)
    images = [{"id": i, "file_name": "x.png", "height": H, "width": W} for i in (1, 2, 3)]
    anns = [box_ann(1, 3, [0, 0, 2, 2]), box_ann(2, 7, [0, 0, 2, 2]), box_ann(3, 9, [0, 0, 2, 2])]
    cats = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}, {"id": 9, "name": "c"}]
    coco = write_coco(tmp_path, images, anns, cats)
    (tmp_path / "map.json").write_text(json.dumps({"b": 5, "3": 2}))
    (tmp_path / "map.csv").write_text("category,index\nb,5\na,2\n")
    for name in ("map.json", "map.csv"):
        info = read_dataset(coco, class_map=tmp_path / name)
        assert len(info.class_names) == 6 and info.class_names[2] == "a"
        assert info.class_names[5] == "b"
        assert [r.label for r in info.records] == [2, 5, -1]
        assert reasons(info) == ["", "", "unmapped_category"]


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", "expected a JSON object"),
    ('{"a": -1}', "index >= 0"),
    ('{"a": "x"}', "index >= 0"),
    ('{"zebra": 0}', "names none of the dataset's categories"),
    ("{", "invalid JSON"),
])  # fmt: skip
def test_bad_class_maps_are_data_errors(tmp_path, content, message):
    write_image(tmp_path / "x.png", W, H)
    coco = write_coco(tmp_path, [{"id": 1, "file_name": "x.png"}], [box_ann(1, 3, [0, 0, 2, 2])])
    (tmp_path / "map.json").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_dataset(coco, class_map=tmp_path / "map.json")
    assert "map.json" in str(info.value)


def test_all_policy_gives_one_record_per_category(tmp_path):
    write_image(tmp_path / "x.png", W, H)
    images = [{"id": 1, "file_name": "x.png", "height": H, "width": W}]
    anns = [box_ann(1, 3, [0, 0, 2, 2]), box_ann(2, 7, [4, 4, 6, 6]) | {"image_id": 1}]
    single = read_dataset(write_coco(tmp_path, images, anns))
    assert [(r.label_name, r.other_labels) for r in single.records] == [("b", ("a",))]
    every = read_dataset(tmp_path / "annotations.json", label_policy="all")
    assert [r.label_name for r in every.records] == ["a", "b"]
    masks = [r.decode_mask(H, W).sum() for r in every.records]
    assert masks == [4, 36]


def test_unsupported_paths_are_data_errors(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported data format"):
        read_dataset(tmp_path / "data.txt")
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "nope.json")


def exif_rotated(path, stored=(6, 4)):
    """A file stored as 6 wide x 4 high, with a red top-left stored pixel, whose EXIF
    orientation 6 tells viewers to turn it 90 degrees clockwise (shown 4 wide x 6 high)."""
    image = Image.new("RGB", stored, "blue")
    image.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    return path


@pytest.mark.parametrize("annotated,expected", [
    ((4, 6), (4, 6)),  # drawn on the image as shown: EXIF orientation applied
    ((6, 4), (6, 4)),  # drawn on the stored pixels: those are used
    (None, (4, 6)),  # no size to tell: as shown
])  # fmt: skip
def test_exif_orientation_follows_the_annotations(tmp_path, annotated, expected):
    path = exif_rotated(tmp_path / "photo.png")
    image = load_image(path, annotated=annotated)
    assert image.size == expected
    red = [(x, y) for x in range(image.width) for y in range(image.height)
           if image.getpixel((x, y)) == (255, 0, 0)]  # fmt: skip
    assert red == ([(3, 0)] if expected == (4, 6) else [(0, 0)])  # clockwise: top-left -> top-right


def test_an_exif_rotated_image_annotated_as_shown_is_audited(tmp_path):
    exif_rotated(tmp_path / "photo.png")
    ann = box_ann(1, 7, [0, 0, 2, 3])
    data = write_coco(tmp_path, [{"id": 1, "file_name": "photo.png", "width": 4, "height": 6}],
                      [ann])  # fmt: skip
    sample = AuditDataset(read_dataset(data).records, AuditTransform(16))[0]
    assert sample["skip"] == "" and sample["masks"].any()
