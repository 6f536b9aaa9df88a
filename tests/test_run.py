"""The run record on disk: save -> load -> save gives the same files, byte for byte."""

import json

import pytest

from auditor.config import AuditConfig
from auditor.models import load_model
from auditor.run import FILES, _json, load_run, save_run
from auditor.runner.pipeline import audit


def as_json(value):
    """What a value reads back as from strict JSON: tuples as lists, NaN as null."""
    return json.loads(_json(value))


@pytest.fixture(scope="module")
def run(coco_dataset, resnet_weights):
    config = AuditConfig(image_size=32, batch_size=16)
    return audit(load_model("resnet18", resnet_weights), data=coco_dataset, config=config)


def test_save_load_save_round_trip_is_byte_identical(run, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    save_run(run, first)
    loaded = load_run(first)
    assert loaded.summary == as_json(run.summary) and loaded.run_info == as_json(run.run_info)
    save_run(loaded, second)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_loaded_run_keeps_its_rows_and_evidence(run, tmp_path):
    import pandas as pd
    import torch

    loaded = load_run(save_run(run, tmp_path))
    pd.testing.assert_frame_equal(loaded.samples, run.samples)
    for name, ev in run.evidence["classes"].items():
        stored = loaded.evidence["classes"][name]
        assert [e["image_id"] for e in stored["exemplars"]] == [
            e["image_id"] for e in ev["exemplars"]
        ]
        for key, mean in ev["means"].items():
            assert torch.equal(stored["means"][key], mean)
    assert loaded.verdict == run.verdict and "<table" in loaded._repr_html_()
