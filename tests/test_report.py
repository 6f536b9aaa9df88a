import dataclasses
import re

import pandas as pd
import pytest

from auditor.config import DetectConfig
from auditor.detect.views import CORE
from auditor.record import read_summary
from auditor.report.render import RunDirFetcher, html_to_pdf, render_html
from auditor.run import AuditRun
from auditor.runner.batch import sample_columns

EVIL = "<script>alert(1)</script>"


def minimal_run(name: str = EVIL) -> AuditRun:
    metrics = {"gradcam": {"n": 30, "chance_corrected": -0.2, "median": -0.2, "ci95": [-0.3, -0.1]}}
    summary = {
        "schema_version": 1, "auditor_version": "0.1.0", "verdict": "fail",
        "flagged_classes": [name],
        "model": {"spec": "resnet18", "sha256": "ab"},
        "dataset": {"spec": "d.json", "sha256": "cd", "n_images": 31, "n_skipped": 1,
                    "skipped_by_reason": {"missing_file": 1}},
        "methods": ["gradcam"],
        "classes": [{"index": 0, "name": name, "n": 30, "accuracy": 0.9, "status": "flag",
                     "flagged": True, "reasons": ["because"], "metrics": metrics,
                     "behaviour": None}],
    }  # fmt: skip
    info = {
        "created": "2026-11-22T00:00:00+00:00", "device": "cpu", "versions": {"torch": "x"},
        "timings": {"total_s": 1.0},
        "target_layer": {"name": "layer2", "cells": [8, 8], "automatic": True},
        "config": {"detect": dataclasses.asdict(DetectConfig())},
    }  # fmt: skip
    skipped = {c: None for c in sample_columns(CORE)} | {
        "sample": 0, "image_id": "9", "file_name": f"{EVIL}.png", "label": -1,
        "skip_reason": "missing_file", "skip_detail": "gone",
    }  # fmt: skip
    return AuditRun(summary=read_summary(summary), samples=pd.DataFrame([skipped]), run_info=info,
                    evidence={})  # fmt: skip


def test_untrusted_strings_are_escaped_and_nothing_external_is_linked():
    html = render_html(minimal_run())
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(s.startswith(("data:", "#")) for s in sources)
    for section in (
        "verdict",
        "method",
        "classes",
        "data-issues",
        "limitations",
        "reproducibility",
    ):
        assert f'id="{section}"' in html


def test_pdf_fetcher_refuses_files_outside_the_run_dir(tmp_path):
    fetcher = RunDirFetcher(tmp_path)
    with pytest.raises(ValueError, match="refuses"):
        fetcher.fetch("file:///etc/passwd")
    with pytest.raises(ValueError, match="refuses"):
        fetcher.fetch("http://example.com/x.png")
    (tmp_path / "ok.txt").write_text("fine")
    assert fetcher.fetch((tmp_path / "ok.txt").resolve().as_uri()) is not None


def test_pdf_renders_without_fetching_a_planted_file_url(tmp_path):
    html = render_html(minimal_run("cat")).replace(
        "</body>", '<img src="file:///etc/passwd"><img src="http://example.com/a.png"></body>'
    )
    pdf = html_to_pdf(html, base=tmp_path)
    assert pdf.startswith(b"%PDF") and b"root:x:0:0" not in pdf


def many_classes(k: int, status: str = "warn") -> AuditRun:
    run = minimal_run("c0")
    template = run.summary.classes[0]
    classes = [
        dataclasses.replace(template, index=i, name=f"class {i}", status=status) for i in range(k)
    ]
    run.summary = run.summary.replace(classes=classes, flagged_classes=[], verdict="warn")
    return run


def test_the_report_of_many_classes_is_bounded():
    from auditor.report.context import MAX_OVERVIEW, MAX_SECTIONS, report_context

    context = report_context(many_classes(150))
    assert len(context["sections"]) == MAX_SECTIONS and context["sections_left_out"] == 120
    assert len(context["overview"]) == MAX_OVERVIEW and context["overview_left_out"] == 110
    assert len(context["classes"]) == 150  # the table lists every class
    assert context["verdict_sentence"].endswith("and 140 more (see the class table).")
    html = render_html(many_classes(150))  # the page says what it left out
    assert html.count('class="class-section"') == MAX_SECTIONS
    assert html.count('class="overview-row"') == MAX_OVERVIEW
    assert "120 more classes that did not pass have no section" in html
    few = report_context(many_classes(5))
    assert len(few["sections"]) == 5 and few["sections_left_out"] == few["overview_left_out"] == 0


def test_names_no_font_can_draw_are_said_plainly():
    from auditor.report.context import undrawable
    from auditor.report.glyphs import Fonts

    run = minimal_run("猫 cat")
    latin = Fonts(tuple((p, c) for p, c in Fonts.installed().files if ord("猫") not in c))
    assert latin.missing("猫 cat!") == "猫" and latin.font_for("猫 cat")[1] == "□ cat"
    (notice,) = undrawable(run.summary, latin)
    assert notice.kind == "undrawable"
    assert "1 name(s)" in notice.text and "“猫 cat” (猫)" in notice.text
    assert "fonts-noto-cjk" in notice.text
    assert undrawable(minimal_run("cat").summary, latin) == []


def test_cjk_names_reach_the_pdf_or_the_notice(tmp_path, capfd):
    """With a CJK font installed (CI installs Debian's fonts-noto-cjk) the PDF holds the
    name's characters; without one, the report says it could not draw them. Either way the
    charts draw without a glyph warning (warnings are errors here) and stderr stays quiet."""
    from pypdf import PdfReader

    from auditor.report.glyphs import Fonts

    name = "猫 ねこ 고양이"
    html = render_html(minimal_run(name))
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(html_to_pdf(html, base=tmp_path))
    text = "".join(page.extract_text() for page in PdfReader(pdf).pages)
    if Fonts.installed().missing(name):
        assert "hold characters that no font" in html
    else:
        assert "hold characters that no font" not in html and "고양이" in text
    assert capfd.readouterr().err == ""
