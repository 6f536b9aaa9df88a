"""Subgroup discovery on planted subgroups, against per-image truth by intervention.

Scenarios: a corner mark on a fraction f of the circles (f = 0.2, 0.5), and two controls
(no mark anywhere; the mark on every image of every class). The classes are circle,
hexagon, square and triangle: at 64 px a circle is hard to tell from a hexagon, so a model
has a reason to read the mark (with four easy shapes it did not: 4 of 20 marked circles
changed their answer without the mark). For each, a resnet18 is trained on the CPU, and
each marked held-out image is re-rendered without its mark: the image is cue-reliant when
its prediction changes. Then ``auditor audit`` runs through the CLI, and a scenario's
subgroup is *found* when a flagged subgroup's members overlap the cue-reliant images with
Jaccard >= 0.5.

    .venv/bin/python benchmarks/subgroup_suite.py --out reports/subgroup-suite

Prints per scenario: marked and cue-reliant images, subgroups found with their status and
Jaccard overlap with the reliant and with the marked images, recall (found / scenarios with
reliant images) and false subgroup flags in the controls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import torch
from click.testing import CliRunner

from auditor.cli import cli
from auditor.data.transforms import AuditTransform
from auditor.lab.demo import ARCH, DemoModel, ensure_dataset, ensure_model
from auditor.lab.drawing import render
from auditor.lab.synthetic import SyntheticSpec, read_scenes
from auditor.lab.training import predict, stack_images
from auditor.models import load_model

FOUR = ("circle", "hexagon", "square", "triangle")


def scenarios(n_train: int, n_audit: int) -> list[tuple[str, SyntheticSpec, bool]]:
    def spec(rate: tuple[float, ...], seed: int) -> SyntheticSpec:
        return SyntheticSpec(
            classes=FOUR, background_strength=(0.0,) * 4, artefact_rate=rate, image_size=64,
            n_train=n_train, n_audit=n_audit, seed=seed,
        )  # fmt: skip

    return [
        ("corner-mark-0.2-of-circle", spec((0.2, 0, 0, 0), 31), False),
        ("corner-mark-0.5-of-circle", spec((0.5, 0, 0, 0), 32), False),
        ("clean", spec((0,) * 4, 33), True),
        ("corner-mark-every-class", spec((1.0,) * 4, 34), True),
    ]


def reliant_images(weights: Path, folder: Path, spec: SyntheticSpec) -> set[str]:
    """Image ids whose prediction changes when their mark is removed (nothing else moves)."""
    model = load_model(ARCH, weights).model
    transform = AuditTransform(spec.image_size)
    scenes = read_scenes(folder)
    marked = [i for i, s in enumerate(scenes) if s.artefact]
    if not marked:
        return set()
    before = predict(model, stack_images([render(scenes[i]) for i in marked], transform))
    clean = [dataclasses.replace(scenes[i], artefact=False) for i in marked]
    after = predict(model, stack_images([render(s) for s in clean], transform))
    return {str(marked[j] + 1) for j in torch.nonzero(before != after).flatten().tolist()}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def run(name: str, spec: SyntheticSpec, control: bool, root: Path, out: Path, epochs: int) -> dict:
    paths = ensure_dataset(spec, root / name, echo=print)
    weights = ensure_model(DemoModel(name, name, spec), root / name, paths["train"], echo=print,
                           epochs=epochs)  # fmt: skip
    reliant = reliant_images(weights, root / name / "audit", spec)
    marked = {str(i + 1) for i, s in enumerate(read_scenes(root / name / "audit")) if s.artefact}
    started = time.perf_counter()
    result = CliRunner().invoke(cli, [
        "audit", "--model", ARCH, "--weights", str(weights), "--data", str(paths["audit"]),
        "--out", str(out / name), "--image-size", "64", "--batch-size", "64", "--no-pdf",
    ], catch_exceptions=False)  # fmt: skip
    audit_s = time.perf_counter() - started
    if result.exit_code not in (0, 3):
        raise SystemExit(f"{name}: audit failed\n{result.output}")
    summary = json.loads((out / name / "summary.json").read_text())
    found = []
    for c in summary["classes"]:
        for s in c.get("subgroups", []):
            members = set(s["members"])
            found.append({
                "class": c["name"], "subgroup": s["subgroup"], "of": s["of"], "n": s["n"],
                "status": s["status"], "jaccard": round(jaccard(members, reliant), 2),
                "jaccard_marked": round(jaccard(members, marked), 2),
            })  # fmt: skip
    hit = any(f["status"] == "flag" and f["jaccard"] >= 0.5 for f in found)
    false_flags = sum(f["status"] == "flag" for f in found) if control else 0
    return {"scenario": name, "control": control, "reliant_images": len(reliant),
            "marked_images": len(marked),
            "subgroups": found, "found": hit, "false_subgroup_flags": false_flags,
            "class_status": {c["name"]: c["status"] for c in summary["classes"]},
            "audit_s": round(audit_s, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("datasets/subgroup-suite"))
    parser.add_argument("--out", type=Path, default=Path("reports/subgroup-suite"))
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-audit", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for name, spec, control in scenarios(args.n_train, args.n_audit):
        if args.only and name not in args.only:
            continue
        rows.append(run(name, spec, control, args.root, args.out, args.epochs))
        print(json.dumps(rows[-1]), flush=True)
    columns = ("scenario", "marked_images", "reliant_images", "found", "false_subgroup_flags",
               "audit_s")  # fmt: skip
    print(pd.DataFrame([{k: r[k] for k in columns} for r in rows]))
    planted = [r for r in rows if not r["control"] and r["reliant_images"]]
    recall = sum(r["found"] for r in planted) / len(planted) if planted else float("nan")
    print(f"subgroup recall: {recall:.2f} over {len(planted)} scenario(s) with reliant images")
    print(f"false subgroup flags in controls: {sum(r['false_subgroup_flags'] for r in rows)}")
    print(f"suite wall time: {time.perf_counter() - started:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
