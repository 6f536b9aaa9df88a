"""Loading at scale: worker processes keep the order, datasets pickle, options reach the run."""

import json
import os
import pickle

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from test_data_fixtures import write_csv

from auditor.cli import cli
from auditor.config import AuditConfig
from auditor.data import AuditDataset, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.errors import ConfigError, DataError
from auditor.runner.pipeline import batches as _batches

COLUMNS = ["image", "label", "x0", "y0", "x1", "y1"]


def coco_to_csv(coco_path, out):
    """The same dataset as a CSV manifest of boxes (COCO [x, y, w, h] -> x0, y0, x1, y1), with
    image paths relative to the COCO folder (read it with ``images=coco_path.parent``)."""
    coco = json.loads(coco_path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    rows = []
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        box = {"x0": x, "y0": y, "x1": x + w, "y1": y + h}
        rows.append({"image": files[a["image_id"]], "label": names[a["category_id"]], **box})
    return write_csv(out, rows, COLUMNS)


def test_worker_processes_keep_order_and_content(coco_dataset):
    records = read_dataset(coco_dataset).records[:20]
    transform = AuditTransform(32)
    workers = min(2, len(os.sched_getaffinity(0)))
    batches = {}
    for n in (0, workers):
        config = AuditConfig(batch_size=6, num_workers=n)
        batches[n] = list(_batches(records, transform, config, torch.device("cpu"), False))
    assert len(batches[0]) == 4
    for single, multi in zip(batches[0], batches[workers]):
        assert single["index"].tolist() == multi["index"].tolist()
        for key in ("inputs", "masks", "ignore"):
            assert single[key].equal(multi[key]), key


def test_datasets_of_every_format_pickle(coco_dataset, tmp_path):
    manifest = coco_to_csv(coco_dataset, tmp_path / "data.csv")
    for data in (coco_dataset, manifest):
        records = read_dataset(data, images=coco_dataset.parent).records
        dataset = AuditDataset(records, AuditTransform(32))
        clone = pickle.loads(pickle.dumps(dataset))
        assert clone[3]["masks"].equal(dataset[3]["masks"])


def test_coco_and_csv_of_the_same_boxes_give_the_same_samples(coco_dataset, tmp_path):
    manifest = coco_to_csv(coco_dataset, tmp_path / "data.csv")
    boxes_only = json.loads(coco_dataset.read_text())
    for a in boxes_only["annotations"]:
        a.pop("segmentation", None)
    (coco_dataset.parent / "boxes.json").write_text(json.dumps(boxes_only))
    coco = AuditDataset(
        read_dataset(coco_dataset.parent / "boxes.json").records, AuditTransform(32)
    )
    records = read_dataset(manifest, images=coco_dataset.parent).records
    csv = AuditDataset(records, AuditTransform(32))
    for i in range(0, 48, 7):  # same objects; class order differs (by id vs by name)
        assert coco[i]["masks"].equal(csv[i]["masks"]) and coco[i]["masks"].any()
        assert coco.records[i].label_name == csv.records[i].label_name


@pytest.mark.parametrize("field,value", [
    ("label_policy", "some"), ("num_workers", -1), ("split", "../train"),
    ("class_map", 3), ("keep_aspect", "yes"),
])  # fmt: skip
def test_data_options_are_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        AuditConfig(**{field: value})


def test_a_missing_class_map_is_named_when_the_data_is_read(coco_dataset):
    """Settings are values: the file is looked for by the reader, not by the config."""
    config = AuditConfig(class_map="/no/such/map.json")
    with pytest.raises(DataError, match=r"/no/such/map\.json: class map cannot be read"):
        read_dataset(coco_dataset, class_map=config.class_map)


def test_cli_audits_a_csv_manifest_with_class_map_and_letterbox(
    coco_dataset, resnet_weights, tmp_path
):
    manifest = coco_to_csv(coco_dataset, tmp_path / "data.csv")
    with manifest.open("a") as handle:
        handle.write("missing.png,circle,0,0,4,4\n")
    class_map = tmp_path / "map.json"
    class_map.write_text(json.dumps({"circle": 0, "square": 1, "triangle": 2}))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "audit", "--model", "resnet18", "--weights", str(resnet_weights), "--data", str(manifest),
        "--images", str(coco_dataset.parent),
        "--out", str(out), "--image-size", "32", "--no-pdf", "--keep-aspect",
        "--class-map", str(class_map), "--label-policy", "all",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    samples = pd.read_parquet(out / "samples.parquet")
    reasons = samples.drop_duplicates("sample")["skip_reason"].value_counts().to_dict()
    assert reasons == {"unmapped_category": 12, "missing_file": 1}
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["keep_aspect"] is True and config["label_policy"] == "all"
