"""An interrupted audit loses nothing: resuming gives exactly the uninterrupted result."""

import pandas as pd
import pytest
import torch

from auditor import pipeline
from auditor.config import AuditConfig
from auditor.models import load_model

CONFIG = AuditConfig(image_size=32, batch_size=8)


def exemplar_ids(run):
    return {c: [e["image_id"] for e in v["exemplars"]] for c, v in run.evidence["classes"].items()}


def test_resume_after_interruption_equals_a_full_run(coco_dataset, resnet_weights, tmp_path,
                                                     monkeypatch):  # fmt: skip
    loaded = load_model("resnet18", resnet_weights)
    full = pipeline.audit(loaded, data=coco_dataset, config=CONFIG)

    calls = {"n": 0}
    original = pipeline._audit_batch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    checkpoint = tmp_path / ".partial.pt"
    monkeypatch.setattr(pipeline, "_audit_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.audit(loaded, data=coco_dataset, config=CONFIG, checkpoint=checkpoint)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["done"] == 16

    monkeypatch.setattr(pipeline, "_audit_batch", original)
    resumed = pipeline.audit(loaded, data=coco_dataset, config=CONFIG, checkpoint=checkpoint)
    pd.testing.assert_frame_equal(resumed.samples, full.samples)
    assert exemplar_ids(resumed) == exemplar_ids(full)
    assert resumed.summary["classes"] == full.summary["classes"]


def test_checkpoint_of_other_settings_is_ignored(coco_dataset, resnet_weights, tmp_path):
    from auditor.checkpoint import Checkpoint, Progress

    checkpoint = tmp_path / ".partial.pt"
    stale = Progress(rows=[{"sample": 0}], evidence={}, done=40)
    Checkpoint(checkpoint, key="another model, data or config").maybe_save(stale, force=True)
    loaded = load_model("resnet18", resnet_weights)
    run = pipeline.audit(loaded, data=coco_dataset, config=CONFIG, checkpoint=checkpoint)
    assert len(run.samples) == 48 * 2 and run.samples["method"].notna().all()


def test_damaged_checkpoint_is_ignored(coco_dataset, resnet_weights, tmp_path):
    checkpoint = tmp_path / ".partial.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    loaded = load_model("resnet18", resnet_weights)
    config = AuditConfig(image_size=32, batch_size=16, methods=("saliency",))
    run = pipeline.audit(loaded, data=coco_dataset, config=config, checkpoint=checkpoint)
    assert len(run.samples) == 48
