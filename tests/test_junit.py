"""``--junit-xml``: an audit as a test run: flag fails, insufficient data is skipped, warn
passes with its reasons in system-out; the counts agree with the cases."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.record import Summary, read_summary
from auditor.report.junit import junit_xml, write_junit


def entry(name: str, status: str, *reasons: str, index: int = 0) -> dict:
    return {"index": index, "name": name, "status": status, "n": 25, "reasons": list(reasons)}


def typed(summary: dict) -> Summary:
    return read_summary(summary)


SUMMARY = {
    "verdict": "fail",
    "flagged_classes": ["circle"],
    "methods": ["gradcam"],
    "auditor_version": "0.1.0",
    "model": {"spec": "resnet18", "sha256": "ab" * 32},
    "dataset": {
        "spec": "data.json",
        "sha256": None,
        "n_images": 100,
        "n_skipped": 0,
        "skip_limit_exceeded": False,
    },
    "classes": [
        entry("circle", "flag", "gradcam: maps off the object", "background alone predicts it"),
        entry("square", "warn", "the interventions show reliance, but attribution maps do not"),
        entry("triangle", "insufficient_data", "12 scored images, fewer than the minimum 20"),
        entry("star", "pass"),
    ],
}


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in root.iter("testcase")}


def counts(element: ET.Element) -> dict[str, str | None]:
    return {k: element.get(k) for k in ("tests", "failures", "skipped", "errors", "time")}


def test_each_status_becomes_its_kind_of_test_case():
    root = ET.fromstring(junit_xml(typed(SUMMARY), suite="nightly", seconds=12.5))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "nightly"
    expected = {"tests": "4", "failures": "1", "skipped": "1", "errors": "0", "time": "12.500"}
    assert counts(root) == counts(suite) == expected
    by_name = cases(root)
    assert list(by_name) == ["circle", "square", "triangle", "star"]
    assert {c.get("classname") for c in by_name.values()} == {"auditor.nightly"}
    failure = by_name["circle"].find("failure")
    assert failure is not None and failure.get("type") == "flag"
    assert failure.get("message") == "gradcam: maps off the object; background alone predicts it"
    skipped = by_name["triangle"].find("skipped")
    assert skipped is not None and "fewer than the minimum 20" in (skipped.get("message") or "")
    assert [child.tag for child in by_name["square"]] == ["system-out"]
    assert "interventions show reliance" in (by_name["square"].findtext("system-out") or "")
    assert list(by_name["star"]) == []
    properties = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert properties["verdict"] == "fail" and properties["model"] == "resnet18"


def test_flagged_and_warned_groups_and_subgroups_are_cases_too():
    cell = {"class": "star", "index": 3, "value": "night", "n": 30}
    summary = {
        **SUMMARY,
        "classes": [
            {**entry("star\x01", "pass"), "subgroups": [
                {"class": "star\x01", "index": 0, "subgroup": 2, "of": 3, "n": 9, "method": "m",
                 "status": "warn", "reasons": ["maps sit off the object"]},
                {"class": "star\x01", "index": 0, "subgroup": 1, "of": 3, "n": 9, "method": "m",
                 "status": "pass", "reasons": []},
            ]},
        ],
        "groups": [{"attribute": "time", "cells": [
            {**cell, "status": "flag", "reasons": ["swap costs 40%"]},
            {**cell, "value": "day", "status": "pass", "reasons": []},
        ]}],
        "dataset": {"spec": "data.json", "n_images": 48, "n_skipped": 30, "max_skipped": 0.5,
                    "skip_limit_exceeded": True},
    }  # fmt: skip
    root = ET.fromstring(junit_xml(typed(summary), suite="run", seconds=1))
    assert list(cases(root)) == [
        "star\ufffd", "star where time = night", "star\ufffd, subgroup 2 of 3 (9 images)",
        "skipped images",
    ]  # fmt: skip
    assert counts(root) == {"tests": "4", "failures": "1", "skipped": "0", "errors": "1",
                            "time": "1.000"}  # fmt: skip
    error = cases(root)["skipped images"].find("error")
    assert error is not None and "30 of 48 images skipped" in (error.get("message") or "")


def test_write_junit_creates_the_folder_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "ci" / "audit.xml"
    write_junit(path, typed(SUMMARY), suite="nightly", seconds=1)
    assert ET.parse(path).getroot().tag == "testsuites"
    assert [p.name for p in path.parent.iterdir()] == ["audit.xml"]


@pytest.mark.slow
def test_audit_writes_junit_xml_even_when_it_exits_3(planted_dataset, planted_weights, tmp_path):
    """A background reader: all four classes flagged. The run is configured by an
    init-config file that the command line overrides (224 px in the file, 32 on the line)."""
    runner, config, junit = CliRunner(), tmp_path / "audit.toml", tmp_path / "junit.xml"
    assert runner.invoke(cli, ["init-config", str(config)]).exit_code == 0
    result = runner.invoke(cli, [
        "audit", "--model", "planted:background_reader", "--weights", str(planted_weights),
        "--data", str(planted_dataset), "--out", str(tmp_path / "nightly"), "--config",
        str(config), "--image-size", "32", "--batch-size", "25", "--no-pdf", "--fail-on-flag",
        "--junit-xml", str(junit),
    ])  # fmt: skip
    assert result.exit_code == 3, result.output
    root = ET.parse(junit).getroot()
    assert counts(root) | {"time": None} == {"tests": "4", "failures": "4", "skipped": "0",
                                             "errors": "0", "time": None}  # fmt: skip
    assert list(cases(root)) == ["circle", "square", "triangle", "star"]
    assert {c.get("classname") for c in root.iter("testcase")} == {"auditor.nightly"}
    run = json.loads((tmp_path / "nightly" / "run.json").read_text())
    assert run["config"]["image_size"] == 32 and run["config"]["batch_size"] == 25
    assert "\r" not in result.output and "audit: 100/100 img (100%) in " in result.output
