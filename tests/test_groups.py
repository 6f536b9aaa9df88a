"""Group audits: attributes from every source, the class rule inside each group, the worst
group of a model whose failure group is known by construction, and the data's own bias."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats.contingency import association
from test_data_fixtures import box_ann, write_coco, write_csv, write_image

from auditor.cli import cli
from auditor.data import read_dataset
from auditor.detect.groups import group_column, label_association
from auditor.lab.synthetic import SyntheticSpec, write_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
OWN = {"circle": "water", "square": "foliage", "triangle": "sand", "star": "brick"}


@pytest.fixture(scope="module")
def grouped(planted_weights, tmp_path_factory):
    """The background reader (fitted where every class sits on its own background) audited
    on images where each class sits on its own background half the time: it is right there
    and wrong elsewhere, so each class's worst group is a background not its own."""
    root = tmp_path_factory.mktemp("mixed")
    spec = SyntheticSpec(background_strength=(0.5,) * 4, image_size=32, n_train=4, n_audit=320,
                         seed=8)  # fmt: skip
    data = write_dataset(spec, root)["audit"]
    out = root / "run"
    result = CliRunner().invoke(cli, [
        "audit", "--model", "planted:background_reader", "--weights", str(planted_weights),
        "--data", str(data), "--out", str(out), "--image-size", "32", "--no-pdf",
        "--group-by", "background", "--group-by", "artefact",
    ])  # fmt: skip
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result, out


@pytest.mark.slow
def test_the_worst_group_is_the_one_the_model_fails_by_construction(grouped):
    result, out = grouped
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    background = next(g for g in summary["groups"] if g["attribute"] == "background")
    worst, best = background["worst_group"], background["best_group"]
    assert worst["n"] >= 20 and worst["value"] != OWN[worst["class"]]
    assert worst["accuracy"] < 0.2 and best["accuracy"] == 1.0
    assert best["value"] == OWN[best["class"]] and background["gap"] > 0.8
    on_own = [c for c in background["cells"] if c["value"] == OWN[c["class"]]]
    assert len(on_own) == 4 and all(c["accuracy"] == 1.0 for c in on_own)
    assert "group background: worst" in result.output


def test_group_cells_follow_the_class_rule(grouped):
    _, out = grouped
    summary = json.loads((out / "summary.json").read_text())
    cells = summary["groups"][0]["cells"]
    assert {c["status"] for c in cells if c["n"] < 20} == {"insufficient_data"}
    assert all(c["reasons"] for c in cells if c["status"] != "pass")
    samples = pd.read_parquet(out / "samples.parquet")
    assert set(samples[group_column("artefact")]) == {"false"}
    counts = samples.drop_duplicates("sample").groupby(group_column("background")).size()
    assert sum(c["n"] for c in cells) == counts.sum() == 320


def test_the_data_bias_is_stated_apart_from_the_model(grouped):
    _, out = grouped
    summary = json.loads((out / "summary.json").read_text())
    data_bias = summary["groups"][0]["association"]
    assert data_bias["test"] == "chi2" and data_bias["p"] < 1e-6 and data_bias["cramers_v"] > 0.3
    assert sum(sum(v.values()) for v in data_bias["counts"].values()) == 320
    artefact = summary["groups"][1]["association"]
    assert artefact["test"] == "none" and artefact["cramers_v"] is None  # one value only
    html = (out / "report.html").read_text()
    assert "Groups by “background”" in html and "Cramér's V" in html


def test_cramers_v_matches_scipy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    values = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 3, 300))
    samples = pd.DataFrame({"sample": range(300), "label": labels, "skip_reason": None,
                            "group.g": [f"v{v}" for v in values]})  # fmt: skip
    found = label_association(samples, ["a", "b", "c"], "group.g")
    table = pd.crosstab(labels, values).to_numpy()
    assert found.cramers_v == pytest.approx(association(table, method="cramer"), abs=1e-12)
    two = samples[samples["label"] < 2].assign(**{"group.g": lambda f: f["group.g"].where(
        f["group.g"] != "v2", "v0")})  # fmt: skip
    assert label_association(two, ["a", "b"], "group.g").test == "fisher"


def test_attributes_come_from_coco_csv_and_a_side_file(tmp_path):
    write_image(tmp_path / "a.png", 8, 8)
    write_image(tmp_path / "b.png", 8, 8)
    images = [
        {"id": 1, "file_name": "a.png", "height": 8, "width": 8,
         "attributes": {"site": "lake", "night": True, "nested": {"x": 1}}},
        {"id": 2, "file_name": "b.png", "height": 8, "width": 8},
    ]  # fmt: skip
    coco = write_coco(tmp_path, images, [box_ann(1, 3, [1, 1, 4, 4]), box_ann(2, 3, [1, 1, 4, 4])])
    records = read_dataset(coco).records
    assert records[0].attributes == (("night", "true"), ("site", "lake"))
    assert records[1].attributes == ()
    side = tmp_path / "attributes.csv"
    side.write_text("image,attribute,value\n2,site,sea\nb.png,camera,x\na.png,site,pond\n")
    merged = read_dataset(coco, attributes=side).records
    assert merged[0].attribute("site") == "pond" and merged[1].attribute("site") == "sea"
    row = {"image": "a.png", "label": "cat", "x0": 1, "y0": 1, "x1": 4, "y1": 4, "site": "lake"}
    manifest = write_csv(tmp_path / "m.csv", [row], list(row))
    assert read_dataset(manifest).records[0].attributes == (("site", "lake"),)


@pytest.mark.parametrize("setup,words", [
    ("unknown", ["no image has the attribute nope", "attributes found: artefact, background"]),
    ("side file without columns", ["expected CSV columns image,attribute,value"]),
])  # fmt: skip
def test_bad_group_inputs_give_one_line(setup, words, coco_dataset, resnet_weights, tmp_path):
    args = [
        "audit",
        "--model",
        "resnet18",
        "--weights",
        str(resnet_weights),
        "--data",
        str(coco_dataset),
        "--out",
        str(tmp_path / "o"),
        "--image-size",
        "32",
        "--no-pdf",
    ]
    if setup == "unknown":
        args += ["--group-by", "nope"]
    else:
        side = tmp_path / "side.csv"
        side.write_text("name,value\nx,y\n")
        args += ["--attributes", str(side), "--group-by", "background"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert all(w in result.output for w in words), result.output


@pytest.mark.slow
def test_images_without_the_attribute_form_the_missing_group(coco_dataset, resnet_weights,
                                                              tmp_path):  # fmt: skip
    coco = json.loads(coco_dataset.read_text())
    for image in coco["images"][::2]:
        image.pop("attributes", None)
    data = coco_dataset.parent / "half.json"
    data.write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, [
        "audit", "--model", "resnet18", "--weights", str(resnet_weights), "--data", str(data),
        "--out", str(tmp_path / "o"), "--image-size", "32", "--no-pdf", "--group-by", "artefact",
        "--methods", "saliency",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    group = json.loads((tmp_path / "o" / "summary.json").read_text())["groups"][0]
    assert group["values"] == ["false", "missing"]
    assert group["association"]["counts"]["circle"]["missing"] >= 1
    assert sum(c["n"] for c in group["cells"] if c["value"] == "missing") == 24


@pytest.mark.slow
def test_a_class_with_one_image_is_insufficient_everywhere(coco_dataset, resnet_weights, tmp_path):
    coco = json.loads(coco_dataset.read_text())
    stars = [a["image_id"] for a in coco["annotations"] if a["category_id"] == 4][1:]
    coco["images"] = [i for i in coco["images"] if i["id"] not in stars]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in stars]
    data = coco_dataset.parent / "one-star.json"
    data.write_text(json.dumps(coco))
    result = CliRunner().invoke(cli, [
        "audit", "--model", "resnet18", "--weights", str(resnet_weights), "--data", str(data),
        "--out", str(tmp_path / "o"), "--image-size", "32", "--no-pdf", "--group-by", "background",
        "--methods", "saliency",
    ])  # fmt: skip
    assert (result.exit_code == 0 and result.exception is None) or isinstance(
        result.exception, SystemExit
    ), result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    star = next(c for c in summary["classes"] if c["name"] == "star")
    assert star["n"] == 1 and star["status"] == "insufficient_data" and star["subgroups"] == []
    cells = [c for c in summary["groups"][0]["cells"] if c["class"] == "star"]
    assert len(cells) == 1 and cells[0]["status"] == "insufficient_data"
