"""Every class whose status changed between two ladder runs of the same draw (cached models,
two versions of the audit), with the truth and the reason the later run gives.

    .venv/bin/python benchmarks/status_changes.py BEFORE_DIR AFTER_DIR [--markdown]

Each folder holds ``suite.json`` files (one per ``ladder.py --out``, searched recursively)
and, beside them, the audits' ``summary.json`` (``<out>/<rung>/<scenario>/``). The reason is
the later run's findings (or, for a pass, its notes), by kind and method.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def statuses(folder: Path) -> dict[tuple[str, str, str], dict]:
    """(rung, scenario, class) -> {status, truth, summary folder} over a folder's suites."""
    found = {}
    for suite in sorted(folder.rglob("suite.json")):
        for rung in json.loads(suite.read_text()):
            for row in rung["scenarios"]:
                if not row.get("usable", True):
                    continue
                audit = suite.parent / rung["rung"] / row["scenario"]
                for name, status in row["status"].items():
                    truth = (
                        "reliant" if name in row["reliant"]
                        else "followed" if name in row.get("follows", [])
                        else "control" if row["negative_control"] else "clean"
                    )  # fmt: skip
                    found[(rung["rung"], row["scenario"], name)] = {
                        "status": status, "truth": truth, "audit": audit,
                    }  # fmt: skip
    return found


def reason(audit: Path, name: str) -> str:
    """The later run's evidence for class ``name``: findings, else notes, by kind/method."""
    path = audit / "summary.json"
    if not path.is_file():
        return "summary.json missing"
    summary = json.loads(path.read_text())
    entry = next(c for c in summary["classes"] if c["name"] == name)

    def said(findings: list[dict]) -> str:
        return ", ".join(f["kind"] + (f"/{f['method']}" if f.get("method") else "")
                         for f in findings)  # fmt: skip

    if entry["findings"]:
        return said(entry["findings"])
    return f"notes: {said(entry['notes'])}" if entry.get("notes") else "no evidence"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = statuses(args.before), statuses(args.after)
    changes = Counter()
    print("| rung | scenario | class | truth | before | after | reason (after) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(before.keys() & after.keys()):
        b, a = before[key], after[key]
        if b["status"] == a["status"]:
            continue
        changes[(b["status"], a["status"], a["truth"])] += 1
        rung, scenario, name = key
        print(f"| {rung} | {scenario} | {name} | {a['truth']} | {b['status']} | {a['status']} "
              f"| {reason(a['audit'], name)} |")  # fmt: skip
    print(f"\n{sum(changes.values())} changes of {len(before.keys() & after.keys())} classes:")
    for (was, now, truth), count in sorted(changes.items()):
        print(f"- {was} -> {now} on {truth} classes: {count}")


if __name__ == "__main__":
    main()
