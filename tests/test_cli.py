"""The CLI end to end, on a COCO dataset and a torchvision checkpoint the tests build."""

import dataclasses
import json

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from auditor.cli import cli
from auditor.report.notebook import run_html


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def audited(coco_dataset, resnet_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    result = run("audit", "--model", "resnet18", "--weights", str(resnet_weights),
                 "--data", str(coco_dataset), "--out", str(out), "--image-size", "32",
                 "--batch-size", "16")  # fmt: skip
    return result, out


@pytest.mark.slow
def test_audit_writes_the_run_directory(audited):
    result, out = audited
    assert result.exit_code == 0, result.output
    for name in ("report.html", "report.pdf", "summary.json", "samples.parquet", "run.json"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["verdict"] in {"pass", "warn", "fail"}
    assert [c["name"] for c in summary["classes"]] == ["circle", "square", "triangle", "star"]
    assert summary["dataset"]["n_images"] == 48 and summary["methods"] == ["gradcam", "saliency"]
    assert sum(c["n"] for c in summary["classes"]) == 48
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 48 * 2 and set(samples["method"]) == {"gradcam", "saliency"}
    info = json.loads((out / "run.json").read_text())
    assert info["target_layer"]["automatic"] and info["report_bytes"]["report.html"] > 0
    assert f"Verdict: {summary['verdict'].upper()}" in result.output


def test_report_rerenders_from_the_stored_run(audited):
    _, out = audited
    (out / "report.html").unlink()
    result = run("report", str(out), "--no-pdf")
    assert result.exit_code == 0 and (out / "report.html").is_file()


@pytest.fixture(scope="module")
def planted(planted_dataset, planted_weights, tmp_path_factory):
    """The CLI on a model that reads only the background: every class must be flagged."""
    out = tmp_path_factory.mktemp("planted") / "out"
    result = run("audit", "--model", "planted:background_reader", "--weights",
                 str(planted_weights), "--data", str(planted_dataset), "--out", str(out),
                 "--image-size", "32", "--batch-size", "25", "--fail-on-flag")  # fmt: skip
    return result, out


@pytest.mark.slow
def test_run_json_records_where_the_time_went(planted):
    _, out = planted
    timings = json.loads((out / "run.json").read_text())["timings"]
    phases = ("preflight", "sanity", "attribution", "scoring", "interventions", "broken_swaps",
              "evidence", "detection", "class_models")  # fmt: skip
    assert all(timings[f"{p}_s"] >= 0 for p in phases) and timings["report_s"] > 0
    assert sum(timings[f"{p}_s"] for p in phases) <= timings["total_s"]


def test_fail_on_flag_exits_3_on_a_background_reader(planted):
    result, out = planted
    assert result.exit_code == 3, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "fail"
    assert summary["flagged_classes"] == ["circle", "square", "triangle", "star"]
    assert "Verdict: FAIL  (flagged: circle, square, triangle, star)" in result.output


@pytest.mark.slow
def test_fail_on_flag_exits_0_when_nothing_is_flagged(audited, coco_dataset, resnet_weights,
                                                      tmp_path):  # fmt: skip
    """Random weights on 12 images per class: insufficient data, which is no flag."""
    result = run("audit", "--model", "resnet18", "--weights", str(resnet_weights), "--data",
                 str(coco_dataset), "--out", str(tmp_path), "--image-size", "32", "--no-pdf",
                 "--fail-on-flag")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flagged_classes"] == [] and summary["verdict"] == "warn"


@pytest.mark.parametrize("args,code,message", [
    (["--model", "notanet"], 1, "not a torchvision classifier"),
    (["--model", "resnet18", "--weights", "missing.pt"], 1, "weights file not found"),
    (["--model", "resnet18", "--weights", "BAD"], 1, "not a readable PyTorch checkpoint"),
    (["--model", "resnet34", "--weights", "WEIGHTS"], 1, "weights do not fit the model"),
    (["--model", "resnet18", "--weights", "WEIGHTS", "--methods", "nope"], 2, "Expected methods"),
])  # fmt: skip
def test_bad_model_and_weights_give_one_line_errors(
    args, code, message, coco_dataset, resnet_weights, tmp_path
):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    args = [str(resnet_weights) if a == "WEIGHTS" else str(bad) if a == "BAD" else a for a in args]
    if "--weights" not in args and args[1] == "notanet":
        args += ["--weights", str(resnet_weights)]
    result = CliRunner().invoke(cli, ["audit", *args, "--data", str(coco_dataset), "--out",
                                      str(tmp_path / "o"), "--image-size", "32"])  # fmt: skip
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_data_gives_one_line_error(resnet_weights, tmp_path):
    broken = tmp_path / "annotations.json"
    broken.write_text('{"images": []}')
    result = CliRunner().invoke(cli, ["audit", "--model", "resnet18", "--weights",
                                      str(resnet_weights), "--data", str(broken), "--out",
                                      str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 1
    assert "annotations.json: key `annotations` missing" in result.output


def test_python_api_matches_cli(coco_dataset, resnet_weights, audited):
    from auditor import AuditConfig, audit

    run_ = audit("resnet18", weights=resnet_weights, data=coco_dataset,
                 config=AuditConfig(image_size=32, batch_size=7))  # fmt: skip
    stored = json.loads((audited[1] / "summary.json").read_text())
    assert run_.verdict == stored["verdict"]
    for ours, theirs in zip(run_.summary.classes, stored["classes"]):
        assert ours.metric("gradcam") == pytest.approx(
            theirs["metrics"]["gradcam"]["chance_corrected"], abs=1e-5
        )  # batch size 7 vs 16
    assert "<table" in run_html(run_)
    assert torch.get_default_dtype() == torch.float32


def test_pdf_reads_as_a_reviewer_would(planted):
    """Page count, verdict and every flagged class in the PDF's extracted text; one inline
    picture per exemplar overlay, original and mean map in the HTML."""
    from pypdf import PdfReader

    _, out = planted
    summary = json.loads((out / "summary.json").read_text())
    reader = PdfReader(out / "report.pdf")
    pages = [page.extract_text() for page in reader.pages]
    text = " ".join(pages)
    assert len(reader.pages) >= 3  # cover, method and classes, reproducibility
    assert "FAIL" in text and len(summary["flagged_classes"]) == 4
    assert all(f"Class “{name}”" in text for name in summary["flagged_classes"])
    assert "page 1 of" in text.lower()
    html = (out / "report.html").read_text()
    sections = [c for c in summary["classes"] if c["status"] != "pass"]
    assert html.count('<section class="class-section"') == len(sections)
    evidence = torch.load(out / "evidence.pt", weights_only=True)["classes"]
    methods = len(summary["methods"])
    overview = sum(1 + methods + 1 + min(2, len(evidence[c["name"]]["exemplars"]))
                   for c in summary["classes"])  # fmt: skip
    full = sum(
        1
        + methods
        + 1
        + (c["status"] == "flag")
        + (len(evidence[c["name"]]["exemplars"]) + len(evidence[c["name"]]["broken_exemplars"]))
        * (1 + methods)
        for c in sections
    )  # mean mask, mean maps, histogram, class model; per exemplar the original and overlays
    shown = [(c, s) for c in summary["classes"] for s in c["subgroups"] if s["status"] != "pass"]
    subgroups = sum(
        1 + sum(e["image_id"] in s["members"] for e in evidence[c["name"]]["exemplars"])
        for c, s in shown
    )  # mean map, member exemplars
    assert all(("class_model" in evidence[c["name"]]) == (c["status"] == "flag") for c in sections)
    assert html.count("<img") == overview + full + subgroups


@pytest.mark.slow
def test_the_class_table_fits_the_pdf_page(planted, tmp_path):
    """With every method audited the table still shows each class's status on its page."""
    from pypdf import PdfReader

    from auditor.report.render import html_to_pdf, render_html
    from auditor.run import load_run

    _, out = planted
    run = load_run(out)
    methods = ["gradcam", "saliency", "gradient_x_input", "guided_backprop", "deconvnet",
               "gradcam_pp", "layercam", "guided_gradcam"]  # fmt: skip
    classes = [  # the stored statistics of one method stand for all
        dataclasses.replace(c, metrics={m: c.metrics["gradcam"] for m in methods})
        for c in run.summary.classes
    ]
    run.summary = run.summary.replace(classes=classes, methods=methods)
    pdf = tmp_path / "wide.pdf"
    pdf.write_bytes(html_to_pdf(render_html(run), base=out))
    pages = PdfReader(pdf).pages
    at = next(i for i, p in enumerate(pages) if "Classes, by risk" in p.extract_text())
    width = float(pages[at].mediabox.width)
    placed: list[tuple[str, float]] = []

    def where(text, cm, tm, font, size):  # x of each piece of text, in page units
        if text.strip():
            placed.append((text.strip(), cm[0] * tm[4] + cm[2] * tm[5] + cm[4]))

    for page in pages[at : at + 2]:  # the table may run onto the next page, row by row
        text = page.extract_text()
        page.extract_text(visitor_text=where)
        if "Every class at a glance" in text:
            break
    statuses = [x for text, x in placed if text == "FLAG"]  # the badges, in capitals
    assert len(statuses) >= 4 and all(0 < x < width - 20 for x in statuses), (statuses, width)
    assert all(any(m in text for text, _ in placed) for m in methods)


@pytest.mark.slow
def test_a_method_that_cannot_run_is_reported_not_fatal(coco_dataset, tmp_path):
    """efficientnet_b0 has no ReLU, so guided backprop cannot run; saliency still does."""
    import torchvision

    weights = tmp_path / "effnet.pt"
    torch.save(torchvision.models.efficientnet_b0(num_classes=4).state_dict(), weights)
    common = ["audit", "--model", "efficientnet_b0", "--weights", str(weights), "--data",
              str(coco_dataset), "--image-size", "32", "--no-pdf"]  # fmt: skip
    result = run(*common, "--out", str(tmp_path / "a"), "--methods", "guided_backprop,saliency")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["methods"] == ["saliency"]
    assert "ReLU" in summary["method_errors"]["guided_backprop"]
    alone = CliRunner().invoke(cli, [*common, "--out", str(tmp_path / "b"), "--methods",
                                     "guided_backprop"])  # fmt: skip
    assert alone.exit_code == 1 and "No requested method can run" in alone.output
    # the subgroup method is tried before the stream too: one the model cannot run turns
    # the subgroups off, with its reason, instead of failing the first batch
    result = run(*common, "--out", str(tmp_path / "c"), "--methods", "saliency",
                 "--subgroup-method", "guided_backprop")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["method_errors"]["guided_backprop"].endswith("(so no subgroups were sought)")
    config = json.loads((tmp_path / "c" / "run.json").read_text())["config"]
    assert config["subgroup_maps"] == 0 and config["methods"] == ["saliency"]


def test_samples_record_label_probability_under_each_intervention(planted):
    _, out = planted
    samples = pd.read_parquet(out / "samples.parquet")
    for column in ("prob_label", "prob_label_swapped", "prob_label_background_only",
                   "prob_label_same_class"):  # fmt: skip
        values = samples[column].dropna()
        assert len(values) == len(samples) and values.between(0, 1).all()
    swapped = samples.drop_duplicates("sample")
    assert (swapped["prob_label_swapped"] < swapped["prob_label"]).mean() > 0.9  # reads the bg
    html = (out / "report.html").read_text()
    assert "p(label)" in html and "→" in html


@pytest.mark.slow
def test_workers_give_the_same_rows(coco_dataset, resnet_weights, tmp_path, audited):
    result = run("audit", "--model", "resnet18", "--weights", str(resnet_weights), "--data",
                 str(coco_dataset), "--out", str(tmp_path), "--image-size", "32",
                 "--batch-size", "16", "--workers", "2", "--no-pdf")  # fmt: skip
    assert result.exit_code == 0, result.output
    ours = pd.read_parquet(tmp_path / "samples.parquet")
    pd.testing.assert_frame_equal(ours, pd.read_parquet(audited[1] / "samples.parquet"))


def test_a_partial_guided_method_is_reported_and_never_drives_a_flag(planted_dataset, tmp_path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "mobile.pt"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=4).state_dict(), weights)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "audit", "--model", "mobilenet_v3_small", "--weights", str(weights), "--data",
        str(planted_dataset), "--out", str(out), "--image-size", "32", "--no-pdf",
        "--methods", "saliency,guided_backprop", "--no-history",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert "Hardswish" in info["partial_methods"]["guided_backprop"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trust"]["untrusted"]["guided_backprop"].startswith("partial:")
    for c in summary["classes"]:
        assert all(f["method"] != "guided_backprop" for f in c["findings"])
    assert (
        "guided_backprop is reported but does not drive flags: partial"
        in (out / "report.html").read_text()
    )


def test_a_transformer_layer_after_the_last_attention_stops_the_audit(planted_dataset, tmp_path):
    base = ["audit", "--model", "planted:small_vit", "--data", str(planted_dataset),
            "--image-size", "32", "--no-pdf", "--no-history", "--methods",
            "gradcam,saliency"]  # fmt: skip
    dead = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "a"), "--target-layer",
                                    "encoder.ln"])  # fmt: skip
    assert dead.exit_code == 1 and "every map at layer 'encoder.ln' is zero" in dead.output
    assert "Traceback" not in dead.output
    fine = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "b")])
    assert fine.exit_code == 0, fine.output
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["target_layer"]["name"] == "encoder.layers.encoder_layer_1.ln_1"


def test_a_channels_last_layer_is_read_in_its_own_layout():
    """Swin's stages are channels-last: named, such a layer is found to be [N, H, W, C] and
    read as such, so Grad-CAM on its final norm equals Grad-CAM on the permute after it,
    the same tensor in [N, C, H, W]."""
    import torchvision

    import auditor
    from auditor.errors import ModelError
    from auditor.models import resolve_target_layer

    torch.manual_seed(0)
    swin = torchvision.models.swin_t(num_classes=3).eval()
    assert resolve_target_layer(swin, None, image_size=224).name == "permute"
    norm = resolve_target_layer(swin, "norm", image_size=224)
    assert (norm.layout, norm.cells) == ("nhwc", (7, 7))
    images = torch.randn(2, 3, 224, 224)
    permute = resolve_target_layer(swin, "permute", image_size=224)
    on_norm = auditor.attribute(swin, images, [1, 2], methods=("gradcam",), target_layer=norm)
    on_permute = auditor.attribute(swin, images, [1, 2], methods=("gradcam",), target_layer=permute)
    assert on_norm["gradcam"].abs().sum() > 0
    torch.testing.assert_close(on_norm["gradcam"], on_permute["gradcam"])
    convnext = torchvision.models.convnext_tiny(num_classes=3).eval()
    assert resolve_target_layer(convnext, None, image_size=224).name == "features"
    inner = resolve_target_layer(convnext, "features.1.0.block.2", image_size=224)  # LayerNorm
    assert inner.layout == "nhwc"
    with pytest.raises(ModelError, match=r"not a spatial feature map .* layers that work: "):
        resolve_target_layer(convnext, "classifier.2", image_size=224)


@pytest.mark.slow
def test_a_bf16_audit_runs_and_records_its_precision(planted_dataset, planted_weights, tmp_path):
    result = CliRunner().invoke(cli, [
        "audit", "--model", "planted:background_reader", "--weights", str(planted_weights),
        "--data", str(planted_dataset), "--out", str(tmp_path), "--image-size", "32",
        "--no-pdf", "--no-history", "--precision", "bf16",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run.json").read_text())["config"]["precision"] == "bf16"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "fail"  # the same planted verdict as in float32
