"""Every class whose status changed between two ladder runs of the same draw (cached models,
two versions of the audit), with the truth and the reason this version gives.

    .venv/bin/python benchmarks/status_changes.py BEFORE_DIR AFTER_DIR

Each folder holds ``suite.json`` files (one per ``ladder.py --out``, searched recursively)
and, beside them, the audits' stored rows (``<out>/<rung>/<scenario>/``). BEFORE's statuses
are those its run gave; AFTER's are its stored audits judged by this version's rule
(``rejudge.py``: the same as its run gave, unless the rule changed since), and the reason is
what decided each (its notes for a pass), by finding kind and method. With
``--rejudge-before``, BEFORE's stored audits are judged by this version's rule too: the
change then is only in what the two folders' audits store (e.g. the mean-background hijack tests
``overlay_hijack.py`` adds to a copy).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import rejudge


def statuses(rungs: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(rung, scenario, class) -> {status, truth, evidence} over suites' rungs."""
    found = {}
    for rung in rungs:
        for row in rung["scenarios"]:
            if not row.get("usable", True):
                continue
            for name, status in row["status"].items():
                truth = (
                    "reliant" if name in row["reliant"]
                    else "followed" if name in row.get("follows", [])
                    else "control" if row["negative_control"] else "clean"
                )  # fmt: skip
                found[(rung["rung"], row["scenario"], name)] = {
                    "status": status, "truth": truth,
                    "evidence": row.get("evidence", {}).get(name, ""),
                }  # fmt: skip
    return found


def stored(folder: Path) -> list[dict]:
    return [
        rung for path in sorted(folder.rglob("suite.json")) for rung in json.loads(path.read_text())
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rejudge-before", action="store_true",
                        help="judge BEFORE's stored audits by this version's rule too (the same "
                             "rule on both: what changed is what the audits store)")  # fmt: skip
    args = parser.parse_args()
    before = rejudge.suites(args.before, {}) if args.rejudge_before else stored(args.before)
    before, after = statuses(before), statuses(rejudge.suites(args.after, {}))
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
              f"| {a['evidence']} |")  # fmt: skip
    print(f"\n{sum(changes.values())} changes of {len(before.keys() & after.keys())} classes:")
    for (was, now, truth), count in sorted(changes.items()):
        print(f"- {was} -> {now} on {truth} classes: {count}")


if __name__ == "__main__":
    main()
