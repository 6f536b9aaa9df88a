"""``auditor probe-data``: the model-free data probe, on tiny planted-shortcut datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from auditor.cli import cli
from auditor.config import DetectConfig
from auditor.detect.probe import ProbeConfig, status
from auditor.detect.probe_features import (
    COLOUR_BINS,
    background_region,
    background_view,
    colour_histograms,
    describe,
    edge_histogram,
    object_geometry,
    object_view,
)
from auditor.detect.probe_geometry import geometry_findings
from auditor.detect.stats_util import newcombe, wilson
from auditor.errors import ConfigError
from auditor.lab.synthetic import SyntheticSpec, write_dataset

pytestmark = pytest.mark.usefixtures("one_thread")
PLANTED = (1.0, 1.0, 0.0, 0.0)  # circle and square always on their own background


def dataset(root: Path, strength: tuple[float, ...]) -> Path:
    spec = SyntheticSpec(background_strength=strength, image_size=64, n_train=4, n_audit=160,
                         seed=3)  # fmt: skip
    return write_dataset(spec, root)["audit"]


def edited(source: Path, target: Path, edit) -> Path:
    """A copy of a COCO file (same image folder) with ``edit(coco)`` applied."""
    coco = json.loads(source.read_text())
    edit(coco)
    path = source.parent / target
    path.write_text(json.dumps(coco))
    return path


def probe_data(*args: str):
    return CliRunner().invoke(cli, ["probe-data", *args])


def strict(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def statuses(summary: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in summary["classes"]}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("planted"), PLANTED)


@pytest.fixture(scope="module")
def planted_run(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("planted-run")
    result = probe_data("--data", str(planted), "--out", str(out), "--fail-on-flag")
    return result, out


def test_the_planted_classes_and_only_they_are_flagged(planted_run):
    result, out = planted_run
    assert result.exit_code == 3, result.output
    summary = strict(out / "data_summary.json")
    assert summary["flagged_classes"] == ["circle", "square"]
    assert statuses(summary)["triangle"] != "flag" and statuses(summary)["star"] != "flag"
    circle = summary["classes"][0]
    assert circle["background_only_accuracy"] > 0.9 and circle["chance"] == 0.25
    low, high = circle["ci95"]
    assert low < circle["background_only_accuracy"] <= high and circle["p_adjusted"] < 1e-6
    assert circle["findings"] == ["background_identifies"] and circle["reasons"]
    gap_low, gap_high = circle["closest_class"]["gap_ci95"]
    assert 0.1 <= gap_low <= circle["closest_class"]["gap"] <= gap_high
    assert "circle" in result.output and "flag" in result.output


def test_the_probe_writes_its_files(planted_run):
    _, out = planted_run
    summary = strict(out / "data_summary.json")
    assert summary["schema_version"] == 1 and summary["auditor_version"]
    assert summary["dataset"] == {**summary["dataset"], "n_images": 160, "n_used": 160,
                                  "n_skipped": 0, "skipped_by_reason": {}}  # fmt: skip
    c = summary["classes"][2]
    assert set(c) >= {"index", "name", "n", "status", "reasons", "background_only_accuracy",
                      "ci95", "p", "chance", "object_only_accuracy", "object_size",
                      "object_position"}  # fmt: skip
    assert 0 < c["object_size"]["q1"] <= c["object_size"]["median"] <= c["object_size"]["q3"]
    assert 0.3 < c["object_position"]["x_mean"] < 0.7
    html = (out / "data_report.html").read_text()
    assert "data:image/svg+xml;base64," in html and "Accuracy on circle" in html
    assert "http://" not in html.replace("http://www.w3.org", "")  # self-contained
    assert (out / "data_report.pdf").read_bytes()[:5] == b"%PDF-"


def test_control_data_flags_nothing(tmp_path):
    data = dataset(tmp_path / "control", (0.0,) * 4)
    result = probe_data("--data", str(data), "--out", str(tmp_path / "out"), "--fail-on-flag",
                        "--no-pdf")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = strict(tmp_path / "out" / "data_summary.json")
    assert summary["flagged_classes"] == [] and "flag" not in statuses(summary).values()
    assert all(c["background_only_accuracy"] < 0.45 for c in summary["classes"])
    assert not (tmp_path / "out" / "data_report.pdf").exists()


def test_box_only_annotations_work(planted, tmp_path):
    def boxes_only(coco: dict) -> None:
        for a in coco["annotations"]:
            del a["segmentation"]

    data = edited(planted, "boxes.json", boxes_only)
    result = probe_data("--data", str(data), "--out", str(tmp_path), "--no-pdf")
    assert result.exit_code == 0, result.output
    assert strict(tmp_path / "data_summary.json")["flagged_classes"] == ["circle", "square"]


def test_messy_data_is_reported_not_dropped(planted, tmp_path):
    """Ten masks that cover the whole image and a class with one image (named with markup)."""

    def messy(coco: dict) -> None:
        for a in coco["annotations"][:10]:
            del a["segmentation"]
            a["bbox"] = [0, 0, 64, 64]
        coco["categories"].append({"id": 5, "name": "<hexagon>"})
        coco["annotations"][10]["category_id"] = 5

    data = edited(planted, "messy.json", messy)
    result = probe_data("--data", str(data), "--out", str(tmp_path), "--no-pdf",
                        "--fail-on-flag")  # fmt: skip
    assert result.exit_code == 3, result.output
    summary = strict(tmp_path / "data_summary.json")
    dataset = summary["dataset"]
    assert dataset["n_skipped"] == 10 and dataset["skipped_by_reason"] == {"no_background": 10}
    assert {s["image_id"] for s in dataset["skipped"]} == {str(i) for i in range(1, 11)}
    assert dataset["n_used"] == 150 and "no_background 10" in result.output
    single = summary["classes"][4]
    assert single["n"] == 1 and single["status"] == "insufficient_data"
    assert single["background_only_accuracy"] is None and single["ci95"] == [None, None]
    assert summary["flagged_classes"] == ["circle", "square"]
    html = (tmp_path / "data_report.html").read_text()
    assert "&lt;hexagon&gt;" in html and "<hexagon>" not in html and "no_background" in html


def test_no_usable_image_is_one_line_and_exit_1(planted, tmp_path):
    def whole(coco: dict) -> None:
        for a in coco["annotations"]:
            del a["segmentation"]
            a["bbox"] = [0, 0, 64, 64]

    data = edited(planted, "whole.json", whole)
    result = probe_data("--data", str(data), "--out", str(tmp_path), "--no-pdf")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(data) in lines[0] and "no_background" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "data_summary.json").exists()


def test_bad_settings_and_files_are_errors_not_tracebacks(tmp_path):
    assert probe_data("--data", "x.json", "--folds", "1").exit_code == 2
    missing = probe_data("--data", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o"))
    assert missing.exit_code == 1 and "nope.json" in missing.output
    assert "Traceback" not in missing.output
    with pytest.raises(ConfigError, match="folds"):
        ProbeConfig(folds=1)


def test_background_features_never_see_the_fill():
    """The background view's features equal the original image's over the untouched region,
    and a change inside that region changes them."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(2, 3, 32, 32, generator=generator)
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 8:16, 8:20] = masks[1, 12:28, 4:14] = True
    ignore = torch.zeros_like(masks)
    region = background_region(masks, ignore)
    view = background_view(inputs, masks, ignore)
    torch.testing.assert_close(describe(view, region), describe(inputs, region))
    changed = inputs.clone()
    changed[:, :, 0:4, 24:32] = 1.0  # outside both removed boxes
    assert not torch.allclose(describe(changed, region), describe(inputs, region))
    assert not region[0, 8:16, 8:20].any() and region[0, 0, 0]


def test_the_background_region_leaves_the_same_area_whatever_the_object_size():
    masks = torch.zeros(3, 20, 20, dtype=torch.bool)
    masks[0, 9:11, 9:11] = True  # small, centred
    masks[1, 0:3, 15:20] = True  # small, in a corner: the square shifts inside the image
    masks[2, 2:18, 8:10] = True  # taller than the square: the box decides that side
    region = background_region(masks, torch.zeros_like(masks), side=0.5)
    removed = (~region).sum((1, 2)).tolist()
    assert removed[0] == removed[1] == 100 and removed[2] == 18 * 10  # rows 1-18 (dilated)
    assert not region[1, 0:10, 10:20].any() and region[1, 10:, :].all()
    assert not (region & masks).any()


def test_features_on_hand_made_images():
    inputs = torch.zeros(1, 3, 8, 8)
    inputs[:, 0] = 0.99  # red in the top bin
    inputs[:, 1, :, 4:] = 0.3  # green: half in bin 0, half in bin 2
    everywhere = torch.ones(1, 8, 8, dtype=torch.bool)
    colours = colour_histograms(inputs, everywhere).view(3, COLOUR_BINS)
    assert colours[0, -1] == 1 and colours[1, 0] == colours[1, 2] == 0.5 and colours[2, 0] == 1
    left = torch.zeros(1, 8, 8, dtype=torch.bool)
    left[:, :, :4] = True
    assert colour_histograms(inputs, left).view(3, COLOUR_BINS)[1, 0] == 1  # only the left half
    edges = edge_histogram(inputs, left)[0]
    assert edges[0] > 0.99  # flat inside the left half, the step at column 4 is eroded away
    assert edge_histogram(inputs, everywhere)[0, 0] < 1  # but seen over the whole image


def test_object_view_and_geometry():
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, 0:2, 6:10] = True  # 8 pixels, top right
    area, x, y = object_geometry(masks)[0].tolist()
    assert area == pytest.approx(0.08) and x == pytest.approx(0.8) and y == pytest.approx(0.1)
    inputs = torch.ones(1, 3, 10, 10)
    view = object_view(inputs, masks, torch.zeros_like(masks))
    assert view[0, :, 0, 9].eq(1).all() and view[0, :, 5, 5].eq(0.5).all()


def test_geometry_rule():
    config = ProbeConfig()
    size = {"median": 0.02, "others_median": 0.1}
    position = {"spread": 0.12, "others_spread": 0.12, "offset": 0.0}
    assert geometry_findings(size, position, config) == ["small_objects"]
    size = {"median": 0.1, "others_median": 0.1}
    position = {"spread": 0.02, "others_spread": 0.12, "offset": 0.3}
    assert geometry_findings(size, position, config) == ["fixed_position", "offset_position"]
    nan = float("nan")
    size = {"median": nan, "others_median": 0.1}
    position = {"spread": nan, "others_spread": 0.1, "offset": nan}
    assert geometry_findings(size, position, config) == []


def test_status_rule():
    assert status(["too_few_images", "background_identifies"]) == "insufficient_data"
    assert status(["not_cross_validated"]) == "insufficient_data"
    assert status(["background_identifies", "small_objects"]) == "flag"
    assert status(["fixed_position"]) == status(["large_objects", "background_narrows"]) == "warn"
    assert status(["background_narrows"]) == status([]) == "pass"


def test_intervals_match_published_values():
    low, high = wilson(8, 10, 0.95)  # textbook value: (0.490, 0.943)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert np.isnan(wilson(0, 0, 0.95)[0])
    low, high = newcombe((56, 70), (48, 80), 0.95)  # Newcombe (1998), method 10
    assert low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)
    assert np.isnan(newcombe((1, 1), (0, 0), 0.95)[0])
    assert DetectConfig().min_n == 20  # the statuses above rely on the audit's defaults


def test_with_a_model_the_views_are_described_by_its_penultimate_features(
    planted, resnet_weights, tmp_path
):
    out = tmp_path / "out"
    result = probe_data("--data", str(planted), "--out", str(out), "--model", "resnet18",
                        "--weights", str(resnet_weights), "--no-pdf")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = strict(out / "data_summary.json")
    assert summary["feature_source"] == "model"
    assert "512 penultimate features of the model resnet18" in summary["features"]
    # even random convolutions tell the planted backgrounds apart
    assert {"circle", "square"} <= {c["name"] for c in summary["classes"]
                                    if c["background_only_accuracy"] > 0.6}  # fmt: skip
    assert "512 penultimate features" in (out / "data_report.html").read_text()


def test_penultimate_features_are_the_input_of_the_head():
    import torchvision

    from auditor.models import penultimate

    model = torchvision.models.resnet18(num_classes=3).eval()
    seen = {}
    model.avgpool.register_forward_hook(lambda m, i, o: seen.setdefault("pooled", o.flatten(1)))
    inputs = torch.randn(2, 3, 64, 64)
    features = penultimate(model, inputs)
    assert features.shape == (2, 512) and torch.equal(features, seen["pooled"])


def test_a_probe_model_without_a_linear_head_is_one_line(planted, tmp_path):
    result = probe_data("--data", str(planted), "--out", str(tmp_path / "o"), "--model",
                        "torch.nn:Identity", "--no-pdf")  # fmt: skip
    assert result.exit_code == 1 and "no final linear layer" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = probe_data("--data", str(planted), "--weights", "w.pt")
    assert result.exit_code == 2 and "--weights needs --model" in result.output
