"""The model-free data probe (``auditor probe-data``) on the demo's planted-shortcut data.

Generates the demo's shortcut and control datasets (``auditor.lab.demo.DEMO_MODELS``: 64 px,
circle and square on their own background 98% of the time, or never), plus a copy of each
split with the segmentations deleted (COCO boxes only), runs ``auditor probe-data`` on every
split through the CLI and compares its flags with the planted truth: a class is planted when
its ``background_strength`` is above 0.

    .venv/bin/python benchmarks/probe_suite.py --out reports/probe-suite
    .venv/bin/python benchmarks/probe_suite.py --out reports/probe-suite-model --no-pdf \
        --model resnet18 --weights datasets/demo-control/resnet18.pt   # the stronger probe

Prints per run the flagged and warned classes, precision, recall, and wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from click.testing import CliRunner

from auditor.cli import cli
from auditor.lab.demo import DEMO_MODELS
from auditor.lab.synthetic import SyntheticSpec, write_dataset


def boxes_only(annotations: Path) -> Path:
    """A copy of a COCO file beside it, without segmentations (masks become boxes)."""
    coco = json.loads(annotations.read_text())
    for a in coco["annotations"]:
        a.pop("segmentation", None)
    path = annotations.with_name("boxes_only.json")
    path.write_text(json.dumps(coco))
    return path


def score(flagged: set[str], planted: set[str]) -> tuple[float | None, float | None]:
    hits = len(flagged & planted)
    precision = hits / len(flagged) if flagged else None
    recall = hits / len(planted) if planted else None
    return precision, recall


def probe_once(
    data: Path, out: Path, planted: set[str], *, pdf: bool, model: list[str] | None = None
) -> dict:
    args = ["probe-data", "--data", str(data), "--out", str(out), *(model or [])]
    args += [] if pdf else ["--no-pdf"]
    started = time.perf_counter()
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    wall = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"probe-data failed on {data}:\n{result.output}")
    summary = json.loads((out / "data_summary.json").read_text())
    flagged = set(summary["flagged_classes"])
    precision, recall = score(flagged, planted)
    return {
        "images": summary["dataset"]["n_used"],
        "skipped": summary["dataset"]["n_skipped"],
        "planted": sorted(planted),
        "flagged": sorted(flagged),
        "warned": sorted(c["name"] for c in summary["classes"] if c["status"] == "warn"),
        "background_only": {c["name"]: c["background_only_accuracy"] for c in summary["classes"]},
        "precision": precision,
        "recall": recall,
        "false_flags": len(flagged - planted),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/probe-suite"))
    parser.add_argument("--seed-offset", type=int, default=0, help="Draw fresh data.")
    parser.add_argument("--no-pdf", action="store_true")
    parser.add_argument("--model", help="probe with this model's penultimate features")
    parser.add_argument("--weights", help="state_dict for --model")
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    model += ["--weights", args.weights] if args.weights else []
    rows = []
    for demo in DEMO_MODELS:
        spec: SyntheticSpec = dataclasses.replace(demo.spec, seed=demo.spec.seed + args.seed_offset)
        planted = {c for c, s in zip(spec.classes, spec.background_strength) if s > 0}
        paths = write_dataset(spec, args.out / "data" / demo.name)
        for split, coco in paths.items():
            for masks, data in (("polygons", coco), ("boxes", boxes_only(coco))):
                name = f"{demo.name}/{split}/{masks}"
                row = probe_once(data, args.out / name, planted, pdf=not args.no_pdf, model=model)
                rows.append({"run": name, **row})
                print(json.dumps(rows[-1]), flush=True)
    flagged = [(set(r["flagged"]), set(r["planted"])) for r in rows]
    hits = sum(len(f & p) for f, p in flagged)
    print(f"overall precision {hits / max(1, sum(len(f) for f, _ in flagged)):.2f}, "
          f"recall {hits / max(1, sum(len(p) for _, p in flagged)):.2f}, "
          f"false flags {sum(len(f - p) for f, p in flagged)}")  # fmt: skip


if __name__ == "__main__":
    main()
