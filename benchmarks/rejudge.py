"""The ladder's stored audits judged again by this version's class rule, without running a
model: the rule's thresholds can be chosen on one draw's stored rows in seconds.

    .venv/bin/python benchmarks/rejudge.py reports/ladder-draw1 [--set max_survival_gap=0.2]

Reads every ``suite.json`` under the folder and, beside it, each audit's
``<rung>/<scenario>/samples.parquet``, ``summary.json`` (the hotspots, the
mean-background hijack tests and the untrusted methods of that audit) and ``run.json`` (its
``[detect]`` settings, overridden by ``--set``); prints the ladder's table with the new
statuses. What needs the model (the faithfulness check, new hotspots, the mean-background
hijack test) is not re-run: methods untrusted then stay untrusted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import ladder
import pandas as pd

from auditor.config import DetectConfig
from auditor.detect.findings import ClassResult, Finding
from auditor.detect.hijack import HijackTest
from auditor.detect.rule import class_results, with_hotspots


def rejudged(audit: Path, overrides: dict[str, float]) -> list[ClassResult]:
    """Every class judged by this version's rule on the stored audit in ``audit``."""
    summary = json.loads((audit / "summary.json").read_text())
    settings = json.loads((audit / "run.json").read_text())["config"]["detect"]
    known = {f.name for f in dataclasses.fields(DetectConfig)}
    detect = DetectConfig(**{k: v for k, v in {**settings, **overrides}.items() if k in known})
    names = [c["name"] for c in summary["classes"]]
    methods = summary["methods"]
    untrusted = summary["trust"]["untrusted"]
    samples = pd.read_parquet(audit / "samples.parquet")
    overlays = [HijackTest.from_dict(c["overlay_hijack"]) for c in summary["classes"]
                if c.get("overlay_hijack")]  # fmt: skip
    results = class_results(samples, names, methods, detect, untrusted=untrusted, overlays=overlays)
    driving = [m for m in methods if m not in untrusted]
    spots = {c["index"]: c.get("hotspots", {}) for c in summary["classes"]}
    return [
        with_hotspots(r, {m: _hotspot(h) for m, h in spots[r.index].items()}, driving, detect)
        for r in results
    ]


def evidence(result: ClassResult) -> str:
    """What decided a result, by finding kind and method (its notes for a pass)."""

    def said(findings: list[Finding]) -> str:
        return ", ".join(f.kind + (f"/{f.method}" if f.method else "") for f in findings)

    if result.findings:
        return said(result.findings)
    return f"notes: {said(result.notes)}" if result.notes else "no evidence"


def _hotspot(stored: dict) -> SimpleNamespace:
    """A stored hotspot with the attributes the rule reads."""
    return SimpleNamespace(**{**stored, "box": tuple(stored["box"])})


def suites(folder: Path, overrides: dict[str, float]) -> list[dict]:
    """Every rung of the folder's suites with its scenarios' statuses judged again."""
    found = []
    for path in sorted(folder.rglob("suite.json")):
        for rung in json.loads(path.read_text()):
            rung = copy.deepcopy(rung)
            for row in rung["scenarios"]:
                audit = path.parent / rung["rung"] / row["scenario"]
                if not (audit / "samples.parquet").is_file():
                    continue
                results = rejudged(audit, overrides)
                row["status"] = {r.name: r.status for r in results}
                row["evidence"] = {r.name: evidence(r) for r in results}
                flagged = {c for c, s in row["status"].items() if s == "flag"}
                reliant, follows = set(row["reliant"]), set(row.get("follows", []))
                row.update(flagged=sorted(flagged), tp=len(flagged & reliant),
                           fp=len(flagged - reliant), fn=len(reliant - flagged),
                           fp_neither=len(flagged - reliant - follows))  # fmt: skip
            found.append(rung)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.set)}
    print(ladder.table(suites(args.folder, overrides)))


if __name__ == "__main__":
    main()
