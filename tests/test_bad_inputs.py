"""A catalogue of bad inputs through the CLI: for each, the exit code, no unhandled
exception (what a user would see as a traceback), and the file or option named in the one
line that explains it. Exit 0 must always mean a complete audit of the inputs named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from catalogue import expect, invoke, notices
from click.testing import CliRunner, Result

from auditor.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def audit(data: Path, out: Path, *args: object) -> Result:
    return invoke("audit", "--data", data, "--out", out, "--image-size", 32, "--no-pdf", *args)


@pytest.fixture
def data(coco_dataset, tmp_path) -> Path:
    """A private copy of the 48-image COCO dataset, free to damage."""
    folder = tmp_path / "data"
    shutil.copytree(coco_dataset.parent, folder)
    return folder / coco_dataset.name


@pytest.fixture
def model(resnet_weights) -> tuple[str, ...]:
    return ("--model", "resnet18", "--weights", str(resnet_weights))


def weights_with(tmp_path: Path, classes: int) -> Path:
    path = tmp_path / f"resnet18-{classes}.pt"
    torch.save(torchvision.models.resnet18(num_classes=classes).state_dict(), path)
    return path


# ---- silent wrong results -------------------------------------------------------------------


def test_a_wrong_images_folder_is_an_error_not_a_verdict(data, model, tmp_path):
    empty = tmp_path / "typo"
    empty.mkdir()
    result = audit(data, tmp_path / "out", *model, "--images", empty, "--fail-on-flag")
    expect(result, 1, "no image could be audited", "missing_file", str(data), "--images")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_an_empty_images_list_is_an_error(data, model, tmp_path):
    coco = json.loads(data.read_text())
    data.write_text(json.dumps({**coco, "images": [], "annotations": []}))
    expect(audit(data, tmp_path / "out", *model), 1, str(data), "no image to audit")


def test_more_skips_than_max_skipped_writes_the_run_and_exits_1(data, model, tmp_path):
    images = sorted((data.parent / "images").glob("*.png"))
    for image in images[:30]:  # 30 of 48 = 62% skipped
        image.unlink()
    result = audit(data, tmp_path / "out", *model)
    expect(result, 1, "Images: 18 scored, 30 skipped (missing_file 30)", "--max-skipped 0.5")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dataset"]["skip_limit_exceeded"] and summary["dataset"]["n_scored"] == 18
    assert notices(tmp_path / "out") == ["incomplete"]
    allowed = audit(data, tmp_path / "out2", *model, "--max-skipped", "0.7")
    expect(allowed, 0, "Images: 18 scored, 30 skipped")
    config = tmp_path / "audit.toml"
    config.write_text("max_skipped = 0.6\n")
    expect(audit(data, tmp_path / "out3", *model, "--config", config), 1, "--max-skipped 0.6")


@pytest.mark.slow
def test_annotations_of_unlisted_images_are_counted_as_skips(data, model, tmp_path):
    coco = json.loads(data.read_text())
    extra = dict(coco["annotations"][0], id=9001, image_id=777)
    coco["annotations"] += [extra, dict(extra, id=9002), dict(extra, id=9003, image_id=None)]
    data.write_text(json.dumps(coco))
    result = audit(data, tmp_path / "out", *model)
    expect(result, 0, "48 scored, 2 skipped", "unknown_image 1", "bad_annotation 1")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dataset"]["skipped_by_reason"] == {"unknown_image": 1, "bad_annotation": 1}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "2 annotation(s) refer to image id 777" in html and "9003" in html


@pytest.mark.slow
def test_more_model_outputs_than_categories_needs_a_class_map(data, tmp_path):
    weights = weights_with(tmp_path, 10)
    result = audit(data, tmp_path / "out", "--model", "resnet18", "--weights", weights)
    expect(result, 1, "10 outputs", "4 categories", str(data), "--class-map")
    class_map = tmp_path / "classes.json"
    class_map.write_text(json.dumps({"circle": 0, "square": 1, "triangle": 2, "star": 3}))
    mapped = audit(data, tmp_path / "mapped", "--model", "resnet18", "--weights", weights,
                   "--class-map", class_map, "--methods", "saliency")  # fmt: skip
    expect(mapped, 0)
    info = json.loads((tmp_path / "mapped" / "run.json").read_text())
    assert info["model"]["num_classes"] == 10


@pytest.mark.slow
def test_a_second_audit_into_a_locked_run_directory_fails_at_once(data, model, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from auditor.rundir import RunLock
            with RunLock({str(out)!r}, purpose="auditor audit"):
                print("locked", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        expect(audit(data, out, *model), 1, str(out), f"pid {holder.pid}", "another auditor")
        expect(invoke("report", out), 1, f"pid {holder.pid}")
    finally:
        holder.communicate("", timeout=30)
    assert audit(data, out, *model, "--methods", "saliency").exit_code == 0  # released


# ---- one line instead of a traceback --------------------------------------------------------


def test_an_unwritable_out_is_found_before_the_model_loads(data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    missing_weights = ("--model", "resnet18", "--weights", tmp_path / "missing.pt")
    expect(audit(data, blocker / "out", *missing_weights), 1, str(blocker / "out"), "cannot write")
    expect(audit(data, blocker, *missing_weights), 2, str(blocker), "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_found_before_the_model_loads(data, tmp_path):
    locked = tmp_path / "read-only"
    locked.mkdir(mode=0o500)
    result = audit(data, locked / "out", "--model", "resnet18", "--weights", "missing.pt")
    expect(result, 1, str(locked / "out"), "cannot write")


@pytest.fixture
def scripted(tmp_path) -> Path:
    torch.manual_seed(2)
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():  # torch.jit.script is deprecated, but users still ship it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torchvision.models.resnet18(num_classes=4).eval()), path)
    return path


@pytest.mark.slow
def test_torchscript_audits_with_the_methods_that_can_run_on_it(data, scripted, tmp_path):
    result = audit(data, tmp_path / "out", "--model", scripted)
    expect(result, 0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["methods"] == ["saliency"]
    assert "TorchScript" in summary["method_errors"]["gradcam"]
    assert summary["model"]["sha256"] and summary["dataset"]["n_scored"] == 48
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["model"]["num_classes"] == 4 and info["target_layer"] is None
    assert summary["trust"]["randomization_similarity"]["saliency"] < 0.99  # really re-drawn


def test_torchscript_with_weights_or_a_target_layer_is_an_error(data, scripted, tmp_path):
    with_weights = audit(data, tmp_path / "a", "--model", scripted, "--weights", scripted)
    expect(with_weights, 1, "--weights", str(scripted))
    layer = audit(data, tmp_path / "b", "--model", scripted, "--target-layer", "layer4")
    expect(layer, 1, "--target-layer layer4", "TorchScript")


def test_a_pickled_whole_model_gets_a_state_dict_hint(data, tmp_path):
    pickled = tmp_path / "whole.pt"
    torch.save(torchvision.models.resnet18(num_classes=4), pickled)
    as_weights = audit(data, tmp_path / "a", "--model", "resnet18", "--weights", pickled)
    expect(as_weights, 1, str(pickled), "state_dict()")
    as_model = audit(data, tmp_path / "b", "--model", pickled)
    expect(as_model, 1, str(pickled), "state_dict()")


FACTORIES = """
import sys
from torch import nn

def raises():
    raise ValueError("no such checkpoint: /models/latest")

def not_a_module():
    return 42

def wrong_input():
    return nn.Linear(3, 4)
"""


@pytest.mark.parametrize("factory,words", [
    ("userzoo:raises", ["the factory raised ValueError", "/models/latest"]),
    ("builtins:exit", ["the factory raised SystemExit"]),
    ("userzoo:not_a_module", ["returned int, not nn.Module"]),
    ("userzoo:wrong_input", ["fails on a 1x3x32x32 input"]),
    ("userzoo:missing", ["cannot import"]),
])  # fmt: skip
def test_a_factory_that_fails_gives_one_line(factory, words, data, tmp_path, monkeypatch):
    (tmp_path / "userzoo.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    expect(audit(data, tmp_path / "out", "--model", factory), 1, *words)
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("toml,words", [
    ("image_size = 64.5", ["image_size", "an integer", "64.5"]),
    ('methods = "gradcam"', ["methods", "a list of strings"]),
    ("keep_aspect = 1", ["keep_aspect", "true or false"]),
    ("max_skipped = 2", ["max_skipped", "[0, 1]"]),
    ("[detect]\nmin_gap = \"0.1\"", ["detect.min_gap", "a number"]),
    ("detect = 3", ["[detect] table"]),
    ("image_size = ", ["invalid TOML"]),
])  # fmt: skip
def test_config_values_of_the_wrong_type_are_usage_errors(toml, words, data, model, tmp_path):
    config = tmp_path / "audit.toml"
    config.write_text(toml + "\n")
    result = invoke("audit", "--data", data, "--out", tmp_path / "out", *model, "--config", config)
    expect(result, 2, str(config), *words)


# ---- auditor report on damaged runs ---------------------------------------------------------


@pytest.fixture(scope="module")
def stored_run(coco_dataset, resnet_weights, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stored") / "run"
    result = CliRunner().invoke(cli, [
        "audit", "--model", "resnet18", "--weights", str(resnet_weights), "--data",
        str(coco_dataset), "--out", str(out), "--image-size", "32", "--no-pdf",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run_copy(stored_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(stored_run, copy)
    return copy


class Hostile:
    def __reduce__(self):
        return (os.system, (f"touch {Path(__file__).parent / 'PWNED'}",))


def damage(run: Path, kind: str) -> None:
    summary = json.loads((run / "summary.json").read_text())
    if kind == "corrupt summary":
        (run / "summary.json").write_text('{"verdict": "pass", ')
    elif kind == "summary without classes":
        del summary["classes"]
        (run / "summary.json").write_text(json.dumps(summary))
    elif kind == "class without status":
        del summary["classes"][1]["status"]
        (run / "summary.json").write_text(json.dumps(summary))
    elif kind == "corrupt parquet":
        (run / "samples.parquet").write_bytes(b"PAR1 not really")
    elif kind == "run.json without config":
        (run / "run.json").write_text(json.dumps({"created": "today"}))
    elif kind == "truncated evidence":
        blob = (run / "evidence.pt").read_bytes()
        (run / "evidence.pt").write_bytes(blob[: len(blob) // 2])
    elif kind == "hostile evidence":
        torch.save({"classes": Hostile()}, run / "evidence.pt")
    elif kind == "evidence of the wrong shape":
        evidence = torch.load(run / "evidence.pt", weights_only=True)
        first = next(iter(evidence["classes"].values()))
        first["exemplars"][0]["image"] = torch.zeros(5, 5)
        torch.save(evidence, run / "evidence.pt")


@pytest.mark.parametrize("kind,named", [
    ("corrupt summary", "summary.json"),
    ("summary without classes", "summary.json"),
    ("class without status", "summary.json"),
    ("corrupt parquet", "samples.parquet"),
    ("run.json without config", "run.json"),
    ("truncated evidence", "evidence.pt"),
    ("hostile evidence", "evidence.pt"),
    ("evidence of the wrong shape", "evidence.pt"),
])  # fmt: skip
@pytest.mark.slow
def test_report_on_a_damaged_run_gives_one_line(kind, named, run_copy):
    damage(run_copy, kind)
    expect(invoke("report", run_copy, "--no-pdf"), 1, str(run_copy / named))
    assert not (Path(__file__).parent / "PWNED").exists()


def test_report_without_evidence_says_so(run_copy):
    assert "mask outlined" in (run_copy / "report.html").read_text()  # exemplars, until now
    assert notices(run_copy) == []
    (run_copy / "evidence.pt").unlink()
    result = invoke("report", run_copy, "--no-pdf")
    expect(result, 0, "evidence.pt is missing")
    assert notices(run_copy) == ["no_evidence"]
    assert "mask outlined" not in (run_copy / "report.html").read_text()  # no exemplar


@pytest.mark.slow
def test_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    """Not through CliRunner: the installed entry point, its stderr and its exit code."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", "--model", "resnet18", "--weights", "w.pt",
         "--data", "annotations.json", "--out", str(blocker / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and str(blocker / "out") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# ---- never count a NaN as an answer ---------------------------------------------------------

NONFINITE = """
import torch
from torch import nn


class Broken(nn.Module):
    '''A random tiny CNN whose logits are ``value`` for the images whose mean pixel is below
    ``below`` (after normalisation).'''

    def __init__(self, value: float, below: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        self.value, self.below = value, below

    def forward(self, x):
        logits = self.fc(self.conv(x).relu().mean((2, 3)))
        bad = x.mean((1, 2, 3)) < self.below
        return torch.where(bad[:, None], torch.full_like(logits, self.value), logits)


def nan_some(): return Broken(float("nan"), 0.0).eval()
def inf_some(): return Broken(float("inf"), 0.0).eval()
def nan_all(): return Broken(float("nan"), 1e9).eval()
"""


@pytest.fixture
def broken_models(tmp_path, monkeypatch) -> str:
    (tmp_path / "brokenzoo.py").write_text(NONFINITE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "brokenzoo"


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["nan_some", "inf_some"])
def test_nonfinite_logits_are_skips_never_predictions(factory, broken_models, data, tmp_path):
    out = tmp_path / "out"
    result = audit(data, out, "--model", f"{broken_models}:{factory}", "--max-skipped", "0.9")
    expect(result, 0, "nonfinite_logits")
    summary = json.loads((out / "summary.json").read_text())
    samples = pd.read_parquet(out / "samples.parquet")
    bad = samples[samples["skip_reason"] == "nonfinite_logits"]
    assert 0 < bad["sample"].nunique() < 48, "the fixture must break some images, not all"
    assert summary["dataset"]["skipped_by_reason"] == {"nonfinite_logits": bad["sample"].nunique()}
    assert (bad["prediction"] == -1).all()  # never an argmax of NaN (class 0)
    scored = samples[samples["skip_reason"].isna()].drop_duplicates("sample")
    for c in summary["classes"]:  # accuracy and n over the finite answers only
        own = scored[scored["label"] == c["index"]]
        assert c["n"] == len(own)
        assert c["accuracy"] == (pytest.approx(own["correct"].mean()) if len(own) else None)
    strict = audit(data, tmp_path / "strict", "--model", f"{broken_models}:{factory}",
                   "--max-skipped", "0.01")  # fmt: skip
    expect(strict, 1, "nonfinite_logits", "--max-skipped")


def test_all_nonfinite_logits_is_an_error_not_a_verdict(broken_models, data, tmp_path):
    result = audit(data, tmp_path / "out", "--model", f"{broken_models}:nan_all")
    expect(result, 1, "NaN or infinite logits", "no image can be scored")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.slow
def test_nonfinite_maps_are_skips(data, tmp_path, monkeypatch):
    """A map holding NaN (here: saliency of the first image of each batch) skips its image."""
    import auditor.runner.batch as batch

    real = batch._attribution

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        if "saliency" in result.maps:
            result.maps["saliency"][0, 0, 0] = float("nan")
        return result

    monkeypatch.setattr(batch, "_attribution", poisoned)
    weights = weights_with(tmp_path, 4)
    result = audit(data, tmp_path / "out", "--model", "resnet18", "--weights", weights,
                   "--batch-size", 16)  # fmt: skip
    expect(result, 0, "nonfinite_map 3")
    samples = pd.read_parquet(tmp_path / "out" / "samples.parquet")
    detail = samples.loc[samples["skip_reason"] == "nonfinite_map", "skip_detail"].iloc[0]
    assert "saliency" in detail


# ---- what was scored is what is counted -----------------------------------------------------


def test_images_whose_mask_fills_the_input_are_skipped_not_scored(data, model, tmp_path):
    """Every image 1x1: each mask covers its whole input, so nothing can be scored."""
    from PIL import Image

    coco = json.loads(data.read_text())
    for image in coco["images"]:
        path = data.parent / image["file_name"]
        Image.open(path).convert("RGB").resize((1, 1)).save(path)
        image["width"] = image["height"] = 1
    for a in coco["annotations"]:
        a.pop("segmentation", None)
        a["bbox"], a["area"] = [0, 0, 1, 1], 1
    data.write_text(json.dumps(coco))
    result = audit(data, tmp_path / "out", *model)
    expect(result, 1, "no image could be audited", "no_background (48)", str(data))


@pytest.mark.slow
def test_the_scored_count_counts_finite_scores(data, model, tmp_path):
    from auditor.runner.summary import scored_images

    out = tmp_path / "out"
    expect(audit(data, out, *model), 0, "Images: 48 scored, 0 skipped")
    samples = pd.read_parquet(out / "samples.parquet")
    assert scored_images(samples) == 48
    assert scored_images(samples.assign(chance_corrected=float("nan"))) == 0
    half = samples.assign(
        chance_corrected=samples["chance_corrected"].where(samples["sample"] < 24)
    )
    assert scored_images(half) == 24


@pytest.mark.slow
def test_two_ids_of_one_file_are_a_notice(data, model, tmp_path):
    coco = json.loads(data.read_text())
    twin = dict(coco["images"][0], id=9001)
    coco["images"].append(twin)
    coco["annotations"].append(dict(coco["annotations"][0], id=9001, image_id=9001))
    data.write_text(json.dumps(coco))
    out = tmp_path / "out"
    expect(audit(data, out, *model), 0)
    shared = json.loads((out / "summary.json").read_text())["dataset"]["shared_files"]
    assert shared["n"] == 1 and sorted(shared["examples"][0]["image_ids"]) == sorted(
        [str(coco["images"][0]["id"]), "9001"]
    )
    assert notices(out) == ["shared_files"]


# ---- numbers and words a reader cannot take -------------------------------------------------

HUGE = "9" * 5000  # past Python's 4,300-digit limit on reading an integer


def test_a_huge_integer_in_annotations_is_one_line(data, model, tmp_path):
    text = data.read_text().replace('"id": 1,', f'"id": {HUGE},', 1)
    assert HUGE in text
    data.write_text(text)
    expect(audit(data, tmp_path / "out", *model), 1, str(data), "more digits")


@pytest.mark.parametrize("file,edit", [
    ("summary.json", lambda s: s.replace('"n_images": 48', f'"n_images": {HUGE}')),
    ("run.json", lambda s: s.replace('"bootstrap": ', f'"bootstrap": {HUGE}, "x": ')),
    ("summary.json", lambda s: s.replace('"status": "insufficient_data"', '"status": "pwned"', 1)),
    ("summary.json", lambda s: s.replace('"verdict": "warn"', '"verdict": "pwned"', 1)),
    ("run.json", lambda s: s.replace('"min_n": 20', '"min_n": "twenty"')),
])  # fmt: skip
def test_report_and_compare_name_a_damaged_record(file, edit, run_copy, tmp_path):
    text = (run_copy / file).read_text()
    changed = edit(text)
    assert changed != text, "the edit must apply"
    (run_copy / file).write_text(changed)
    named = str(run_copy / file)
    rendered = invoke("report", run_copy, "--no-pdf")
    compared = invoke("compare", run_copy, run_copy, "--out", tmp_path / "cmp")
    if "twenty" in changed:  # the report does not check it: compare does
        expect(compared, 1, named, "config.detect")
        return
    expect(rendered, 1, named)
    expect(compared, 1, named)


def test_an_insufficient_class_turned_pwned_is_no_regression_but_an_error(run_copy, tmp_path):
    after = tmp_path / "after"
    shutil.copytree(run_copy, after)
    summary = json.loads((after / "summary.json").read_text())
    summary["classes"][0]["status"] = "pwned"
    (after / "summary.json").write_text(json.dumps(summary))
    result = invoke("compare", run_copy, after, "--out", tmp_path / "cmp", "--fail-on-regression")
    expect(result, 1, str(after / "summary.json"), "pwned")


@pytest.mark.slow
def test_long_names_and_reasons_are_bounded_in_the_report(run_copy):
    from auditor.report.templating import MAX_TEXT

    summary = json.loads((run_copy / "summary.json").read_text())
    name, reason = "n" * 1_000_000, "because " * 200_000
    summary["classes"][0]["name"], summary["classes"][0]["reasons"] = name, [reason]
    summary["classes"][0]["findings"] = []
    summary["model"]["spec"] = "m" * 300
    (run_copy / "summary.json").write_text(json.dumps(summary))
    expect(invoke("report", run_copy), 0)
    html = (run_copy / "report.html").read_text()
    assert len(html) < 3_000_000 and "n" * (MAX_TEXT + 1) not in html
    assert "because " * (MAX_TEXT // 8 + 1) not in html and "more characters]" in html
    assert json.loads((run_copy / "summary.json").read_text())["classes"][0]["name"] == name
