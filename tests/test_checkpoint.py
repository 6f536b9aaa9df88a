"""An interrupted audit loses nothing, and resumes only onto the very same inputs: resuming
gives exactly the uninterrupted result, and a checkpoint of anything else is set aside."""

import logging
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image

from auditor.config import AuditConfig
from auditor.models import load_model
from auditor.runner import pipeline
from auditor.runner.provenance import PART_NAMES

CONFIG = AuditConfig(image_size=32, batch_size=8)


def exemplar_ids(run):
    return {c: [e["image_id"] for e in v["exemplars"]] for c, v in run.evidence["classes"].items()}


@pytest.fixture
def interrupt_at(monkeypatch):
    """Make the n-th batch of the next audit raise KeyboardInterrupt (Ctrl-C)."""

    def arm(n: int) -> None:
        calls = {"n": 0}
        original = pipeline.audit_batch

        def interrupted(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                monkeypatch.setattr(pipeline, "audit_batch", original)
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(pipeline, "audit_batch", interrupted)

    return arm


def audit_interrupted(loaded, checkpoint, arm, **kwargs):
    arm(3)
    with pytest.raises(KeyboardInterrupt):
        pipeline.audit(loaded, config=CONFIG, checkpoint=checkpoint, **kwargs)
    assert torch.load(checkpoint, weights_only=True)["done"] == 16


@pytest.mark.slow
def test_resume_after_interruption_equals_a_full_run(
    coco_dataset, resnet_weights, tmp_path, interrupt_at
):
    loaded = load_model("resnet18", resnet_weights)
    full = pipeline.audit(loaded, data=coco_dataset, config=CONFIG)
    checkpoint = tmp_path / ".partial.pt"
    audit_interrupted(loaded, checkpoint, interrupt_at, data=coco_dataset)
    resumed = pipeline.audit(loaded, data=coco_dataset, config=CONFIG, checkpoint=checkpoint)
    pd.testing.assert_frame_equal(resumed.samples, full.samples)
    assert exemplar_ids(resumed) == exemplar_ids(full)
    assert resumed.summary.classes == full.summary.classes


@pytest.fixture
def wrong_images(coco_dataset, tmp_path):
    """Another folder with images of the same names and sizes but other pixels."""
    folder = tmp_path / "wrong"
    shutil.copytree(coco_dataset.parent, folder)
    for path in folder.glob("**/*.png"):
        with Image.open(path) as image:
            image.convert("RGB").transpose(Image.Transpose.ROTATE_180).save(path)
    return folder


@pytest.mark.slow
def test_resume_with_another_images_folder_starts_afresh(
    coco_dataset, resnet_weights, tmp_path, wrong_images, interrupt_at
):
    """The issue's report: a wrong --images, Ctrl-C, the right --images. The second run must
    not take the first one's rows."""
    loaded = load_model("resnet18", resnet_weights)
    checkpoint = tmp_path / ".partial.pt"
    audit_interrupted(loaded, checkpoint, interrupt_at, data=coco_dataset, images=wrong_images)
    resumed = pipeline.audit(loaded, data=coco_dataset, config=CONFIG, checkpoint=checkpoint)
    clean = pipeline.audit(loaded, data=coco_dataset, config=CONFIG)
    pd.testing.assert_frame_equal(resumed.samples, clean.samples)
    assert resumed.summary == clean.summary
    assert resumed.run_info["checkpoint"] == {
        "outcome": "set_aside",
        "done": 0,
        "changed": ["image_paths", "image_files"],
        "unreadable": None,
    }
    assert clean.run_info["checkpoint"]["outcome"] == "fresh"
    assert (tmp_path / ".partial.pt.stale").is_file()


@pytest.mark.parametrize("change,part", [
    ("images", "image_files"),
    ("weights", "model"),
    ("settings", "settings"),
    ("annotations", "annotations"),
])  # fmt: skip
@pytest.mark.slow
def test_a_checkpoint_of_other_inputs_is_set_aside_naming_what_changed(
    change, part, coco_dataset, resnet_weights, tmp_path, interrupt_at, caplog
):
    data = tmp_path / "data"
    shutil.copytree(coco_dataset.parent, data)
    annotations = data / coco_dataset.name
    weights = tmp_path / "weights.pt"
    shutil.copy(resnet_weights, weights)
    checkpoint = tmp_path / ".partial.pt"
    audit_interrupted(load_model("resnet18", weights), checkpoint, interrupt_at, data=annotations)
    config = CONFIG
    if change == "images":  # same paths, a file rewritten
        image = sorted(data.glob("**/*.png"))[0]
        with Image.open(image) as picture:
            picture.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image)
        os.utime(image, ns=(1, 1))
    elif change == "weights":
        torch.manual_seed(9)
        torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), weights)
    elif change == "settings":
        config = AuditConfig(image_size=32, batch_size=8, exemplars_per_class=2)
    else:
        annotations.write_text(annotations.read_text().replace('"circle"', '"disc"'))
    with caplog.at_level(logging.WARNING):
        run = pipeline.audit(load_model("resnet18", weights), data=annotations, config=config,
                             checkpoint=checkpoint)  # fmt: skip
    assert run.run_info["checkpoint"]["changed"] == [part]
    assert PART_NAMES[part] in caplog.text  # the one log line says it in words
    assert (tmp_path / ".partial.pt.stale").is_file()
    clean = pipeline.audit(load_model("resnet18", weights), data=annotations, config=config)
    pd.testing.assert_frame_equal(run.samples, clean.samples)


def test_damaged_checkpoint_is_set_aside(coco_dataset, resnet_weights, tmp_path):
    checkpoint = tmp_path / ".partial.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    loaded = load_model("resnet18", resnet_weights)
    config = AuditConfig(image_size=32, batch_size=16, methods=("saliency",))
    run = pipeline.audit(loaded, data=coco_dataset, config=config, checkpoint=checkpoint)
    assert len(run.samples) == 48 and run.run_info["checkpoint"]["outcome"] == "set_aside"
    assert run.run_info["checkpoint"]["unreadable"] is not None
    assert (tmp_path / ".partial.pt.stale").read_bytes() == b"not a checkpoint"


def test_worker_count_does_not_discard_a_checkpoint(
    coco_dataset, resnet_weights, tmp_path, interrupt_at
):
    """Worker processes load the same samples in the same order: a resume may change them."""
    loaded = load_model("resnet18", resnet_weights)
    checkpoint = tmp_path / ".partial.pt"
    audit_interrupted(loaded, checkpoint, interrupt_at, data=coco_dataset)
    config = AuditConfig(image_size=32, batch_size=8, num_workers=1)
    run = pipeline.audit(loaded, data=coco_dataset, config=config, checkpoint=checkpoint)
    assert run.run_info["checkpoint"] == {"outcome": "resumed", "done": 16, "changed": [],
                                          "unreadable": None}  # fmt: skip


@pytest.mark.slow
def test_sigterm_keeps_progress_like_ctrl_c(coco_dataset, resnet_weights, tmp_path):
    """A scheduler stops a job with SIGTERM; the real entry point saves the checkpoint."""
    out = tmp_path / "out"
    script = f"""
import os, signal, sys
from auditor import cli
from auditor.runner import pipeline
original, calls = pipeline.audit_batch, []
def batch(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)
pipeline.audit_batch = batch
sys.argv = ["auditor", "audit", "--model", "resnet18", "--weights", {str(resnet_weights)!r},
            "--data", {str(coco_dataset)!r}, "--out", {str(out)!r}, "--image-size", "32",
            "--batch-size", "8", "--no-pdf"]
cli.main()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert "Progress is kept" in done.stderr and "Traceback" not in done.stderr
    assert torch.load(out / ".partial.pt", weights_only=True)["done"] >= 16


def _rows(start: int, n: int) -> list[dict]:
    """Rows like the pipeline's: ints, floats with NaN, None, strings and bools."""
    return [{"sample": i, "image_id": str(i), "label": i % 3, "correct": bool(i % 2),
             "chance_corrected": float("nan") if i % 7 == 0 else i / 10,
             "skip_reason": None if i % 5 else "unreadable", "prob_label": 0.5}
            for i in range(start, start + n)]  # fmt: skip


COLUMNS = ("sample", "image_id", "label", "correct", "chance_corrected", "skip_reason",
           "prob_label")  # fmt: skip


def test_columnar_rows_give_the_frame_the_row_dicts_give():
    from auditor.runner.checkpoint import Rows

    rows = Rows(COLUMNS)
    batches = [_rows(0, 10), _rows(10, 1), [], _rows(11, 30)]
    for batch in batches:
        rows.update(batch)
    expected = pd.DataFrame([r for b in batches for r in b], columns=list(COLUMNS))
    pd.testing.assert_frame_equal(rows.frame(), expected)
    assert len(rows) == 41


def test_a_save_writes_only_the_new_rows_and_a_torn_save_is_ignored(tmp_path):
    from auditor.accumulate import Keyed
    from auditor.runner.checkpoint import Checkpoint, Progress, Rows

    path = tmp_path / ".partial.pt"
    saver = Checkpoint(path, {"model": "m"})
    progress = Progress(Rows(COLUMNS), Keyed(), done=0)
    progress.rows.update(_rows(0, 20))
    progress.done = 20
    saver.maybe_save(progress, force=True)
    first = (tmp_path / ".partial.rows-00001.pt").read_bytes()
    progress.rows.update(_rows(20, 5))
    progress.rows.update(_rows(25, 5))
    progress.done = 30
    saver.maybe_save(progress, force=True)
    assert (tmp_path / ".partial.rows-00001.pt").read_bytes() == first  # never rewritten
    second = torch.load(tmp_path / ".partial.rows-00002.pt", weights_only=True)
    assert second["sample"].tolist() == list(range(20, 30))  # only what was new
    torch.save({"sample": [999]}, tmp_path / ".partial.rows-00003.pt")  # killed before the head
    loaded = Checkpoint(path, {"model": "m"}).load(Progress(Rows(COLUMNS), Keyed()))
    assert loaded.done == 30
    expected = pd.DataFrame(_rows(0, 30), columns=list(COLUMNS))
    pd.testing.assert_frame_equal(loaded.rows.frame(), expected)
    Checkpoint(path, {"model": "m"}).discard()
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_and_gives_the_same_rows(
    coco_dataset, resnet_weights, monkeypatch, caplog
):
    """A device that only fits 3 images: every batch of 8 is audited in halves (of halves),
    once said, with the rows of an audit that fitted."""
    loaded = load_model("resnet18", resnet_weights)
    full = pipeline.audit(loaded, data=coco_dataset, config=CONFIG)
    original = pipeline.audit_batch

    def small_device(net, batch, *args, **kwargs):
        if len(batch["index"]) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(net, batch, *args, **kwargs)

    monkeypatch.setattr(pipeline, "audit_batch", small_device)
    with caplog.at_level(logging.WARNING):
        halved = pipeline.audit(loaded, data=coco_dataset, config=CONFIG)
    pd.testing.assert_frame_equal(halved.samples, full.samples)
    assert halved.summary.classes == full.summary.classes
    assert caplog.text.count("Out of memory at a batch of 8 images") == 1
