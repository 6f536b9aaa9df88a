"""Malformed annotation files: every reader gives a DataError or clean skips, never a crash."""

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_fixtures import write_image, write_label_png

from auditor.data import AuditDataset, SkipReason, read_dataset
from auditor.data.labels import load_class_map
from auditor.data.transforms import AuditTransform
from auditor.errors import DataError

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KEYS = ["images", "annotations", "categories", "id", "file_name", "height", "width",
        "image_id", "category_id", "bbox", "segmentation", "counts", "size", "iscrowd",
        "area", "name"]  # fmt: skip
PATHS = ["x.png", "../x.png", "/etc/passwd", "missing.png", "", "sub/../x.png", "x.png\x00"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from(PATHS)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=16,
)
VALID = {
    "images": [
        {"id": 1, "file_name": "x.png", "height": 8, "width": 8},
        {"id": 2, "file_name": "x.png", "height": 8, "width": 8},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16},
        {"id": 2, "image_id": 1, "category_id": 2, "area": 9,
         "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        {"id": 3, "image_id": 2, "category_id": 1, "area": 8,
         "segmentation": {"size": [8, 8], "counts": [8, 8, 48]}},
        {"id": 4, "image_id": 2, "category_id": 2, "iscrowd": 1, "area": 8,
         "segmentation": {"size": [8, 8], "counts": "`08X1"}},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}  # fmt: skip


def paths_of(node, prefix=()):
    yield prefix
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield from paths_of(child, (*prefix, key))


@st.composite
def mutated_coco(draw):
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths_of(doc))))
        value = draw(json_values)
        if not path:
            doc = value
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(path[-1])
        else:
            parent[path[-1]] = value
    return doc


def assert_clean(data, **options):
    """Reading raises DataError or gives records whose samples load or skip with a reason."""
    try:
        info = read_dataset(data, **options)
    except DataError:
        return
    dataset = AuditDataset(info.records, AuditTransform(16))
    for i in range(len(dataset)):
        sample = dataset[i]
        reason = sample["skip"].partition(":")[0]
        assert reason == "" or reason in set(SkipReason), sample["skip"]
        assert sample["masks"].shape == sample["ignore"].shape == (16, 16)


@FUZZ
@given(doc=mutated_coco())
def test_mutated_coco_files(doc):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_image(root / "x.png", 8, 8)
        (root / "annotations.json").write_text(json.dumps(doc))
        assert_clean(root / "annotations.json")


@FUZZ
@given(doc=json_values)
def test_random_json_as_coco(doc):
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "annotations.json").write_text(json.dumps(doc))
        assert_clean(Path(folder) / "annotations.json")


xml_text = st.text(alphabet="<>&/ab1-9.e x\"'", max_size=8) | st.sampled_from(
    ["1", "8", "0", "-4", "1e400", "nan", "x.png", "../../x.png", "/etc/passwd", ""]
)


@FUZZ
@given(
    fields=st.lists(xml_text, min_size=8, max_size=8),
    raw=st.none() | st.binary(max_size=40),
    split=st.none() | st.lists(st.text(alphabet="ab./ 1-\n", max_size=6), max_size=3),
    png=st.none() | st.tuples(st.integers(1, 10), st.integers(1, 10), st.integers(0, 255)),
)
def test_malformed_voc_roots(fields, raw, split, png):
    name, filename, width, height, x0, y0, x1, y1 = fields
    xml = (
        f"<annotation><filename>{filename}</filename><size><width>{width}</width>"
        f"<height>{height}</height></size><object><name>{name}</name><bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>"
    )
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "Annotations").mkdir()
        (root / "Annotations" / "x.xml").write_bytes(raw if raw is not None else xml.encode())
        write_image(root / "JPEGImages" / "x.png", 8, 8)
        if png is not None:
            labels = np.full(png[:2], png[2], dtype=np.uint8)
            write_label_png(root / "SegmentationObject" / "x.png", labels)
        if split is not None:
            (root / "ImageSets" / "Main").mkdir(parents=True)
            (root / "ImageSets" / "Main" / "s.txt").write_text("\n".join(split))
        assert_clean(root, split="s" if split is not None else None)


csv_cell = st.sampled_from(["x.png", "../x.png", "/etc/passwd", "m.png", "a", "3", "-1", "nan",
                            "inf", "", "1e400", "9"]) | st.text(max_size=4)  # fmt: skip


@FUZZ
@given(
    columns=st.lists(
        st.sampled_from(["image", "label", "mask", "ignore", "x0", "y0", "x1", "y1", "z"]),
        min_size=1, max_size=8,
    ),
    rows=st.lists(st.lists(csv_cell, max_size=9), max_size=5),
    raw=st.none() | st.binary(max_size=60),
)  # fmt: skip
def test_malformed_csv_manifests(columns, rows, raw):
    import csv

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_image(root / "x.png", 8, 8)
        write_label_png(root / "m.png", np.eye(8))
        path = root / "data.csv"
        if raw is not None:
            path.write_bytes(raw)
        else:
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(columns)
                writer.writerows(rows)
        assert_clean(path)


@FUZZ
@given(doc=json_values, as_csv=st.booleans(), text=st.text(max_size=30))
def test_malformed_class_maps(doc, as_csv, text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("map.csv" if as_csv else "map.json")
        path.write_text(text if as_csv else json.dumps(doc))
        try:
            mapping = load_class_map(path)
        except DataError as exc:
            assert path.name in str(exc)
            return
        assert all(isinstance(v, int) and v >= 0 for v in mapping.values())
