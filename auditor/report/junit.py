"""An audit as a JUnit XML test run, so CI test views (GitLab, Jenkins, GitHub) list it.

One test case per class: a flagged class fails, one with too few images is skipped, a warned
one passes with its reasons in ``system-out``. Flagged and warned groups (class x attribute
value) and subgroups get a case each too; a run that skipped more images than allowed gets a
case in error. Built from ``summary.json`` alone, so a stored run can be exported again.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from auditor.errors import OutputError
from auditor.record import Summary
from auditor.report.templating import MAX_TEXT, shorten
from auditor.rundir import atomic_write

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # no XML 1.0 character
_KNOWN = ("pass", "warn", "flag", "insufficient_data")  # any other status is an error


class Case(NamedTuple):
    name: str
    status: str
    reasons: list[str]


def junit_xml(summary: Summary, *, suite: str, seconds: float) -> bytes:
    """The JUnit XML document (UTF-8) of a ``summary.json``: one test suite ``suite`` whose
    cases have the class name ``auditor.<suite>``, taking ``seconds``."""
    cases = list(_cases(summary))
    counts = {
        "tests": len(cases),
        "failures": sum(c.status == "flag" for c in cases),
        "errors": sum(c.status not in _KNOWN for c in cases),
        "skipped": sum(c.status == "insufficient_data" for c in cases),
    }
    attributes = {k: str(v) for k, v in counts.items()} | {"time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", {"name": "auditor", **attributes})
    element = ET.SubElement(root, "testsuite", {"name": _clean(suite), **attributes})
    _properties(ET.SubElement(element, "properties"), summary)
    for case in cases:
        _testcase(ET.SubElement(element, "testcase"), case, classname=f"auditor.{suite}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: str | Path, summary: Summary, *, suite: str, seconds: float) -> None:
    """Write :func:`junit_xml` to ``path`` atomically (a CI job never reads half a file),
    creating its folder."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, junit_xml(summary, suite=suite, seconds=seconds))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the JUnit XML ({exc.strerror}).") from None


def _cases(summary: Summary) -> Iterator[Case]:
    for c in summary.classes:
        yield Case(c.name, c.status, c.reasons)
    for group in summary.groups:
        for cell in group.cells:
            if cell.status in ("flag", "warn"):
                name = f"{cell.class_name} where {group.attribute} = {cell.value}"
                yield Case(name, cell.status, cell.reasons)
    for c in summary.classes:
        for s in c.subgroups:
            if s.status in ("flag", "warn"):
                name = f"{s.class_name}, subgroup {s.subgroup} of {s.of} ({s.n} images)"
                yield Case(name, s.status, s.reasons)
    dataset = summary.dataset
    if dataset.skip_limit_exceeded:
        why = (
            f"{dataset.n_skipped} of {dataset.n_images} images skipped, more than "
            f"max_skipped {dataset.max_skipped:g} allows"
        )
        yield Case("skipped images", "skip_limit_exceeded", [why])


def _testcase(element: ET.Element, case: Case, *, classname: str) -> None:
    element.set("classname", _clean(classname))
    element.set("name", _clean(case.name))
    said = _clean("; ".join(case.reasons))
    if case.status == "flag":
        failure = ET.SubElement(element, "failure", type="flag", message=said)
        failure.text = _clean("\n".join(case.reasons))
    elif case.status == "insufficient_data":
        ET.SubElement(element, "skipped", message=said or "insufficient data")
    elif case.status == "warn":
        ET.SubElement(element, "system-out").text = _clean("\n".join(["warn", *case.reasons]))
    elif case.status != "pass":
        ET.SubElement(element, "error", type=_clean(case.status), message=said or case.status)


def _properties(element: ET.Element, summary: Summary) -> None:
    values = {
        "verdict": summary.verdict,
        "model": summary.model.spec,
        "model_sha256": summary.model.sha256,
        "data": summary.dataset.spec,
        "data_sha256": summary.dataset.sha256,
        "auditor_version": summary.auditor_version,
    }
    for name, value in values.items():
        if value is not None:
            ET.SubElement(element, "property", name=name, value=_clean(str(value)))


def _clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (class names come from the data),
    bounded as the report bounds what it prints."""
    return _NOT_XML.sub("\ufffd", shorten(text, MAX_TEXT))
