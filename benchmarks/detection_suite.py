"""Detection accuracy on planted-shortcut scenarios, against ground truth by intervention.

For each scenario: generate data with the synthetic generator, train a resnet18 on the CPU,
measure per class whether the model really relies on the planted cue (re-render each
held-out object on a neutral background without the mark; a class losing at least
``--reliance-drop`` accuracy is reliant), then run ``auditor audit`` through the CLI and
compare its flags with that truth.

    .venv/bin/python benchmarks/detection_suite.py --out reports/detection-suite

Prints per scenario and overall class-level precision, recall and false-flag rate, and the
audit's wall time per 1,000 images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from auditor.lab.demo import ARCH
from auditor.lab.scenarios import Recipe, Scenario, rates, run_scenario
from auditor.lab.synthetic import SyntheticSpec

FOUR = ("circle", "square", "triangle", "cross")
TWO = ("circle", "square")


def scenarios(n_train: int, n_audit: int, seed_offset: int = 0) -> list[Scenario]:
    def spec(classes, strength, artefact, seed, alternative="neutral"):
        return SyntheticSpec(classes=classes, background_strength=strength, artefact_rate=artefact,
                             image_size=64, n_train=n_train, n_audit=n_audit,
                             seed=seed + seed_offset, alternative=alternative)  # fmt: skip

    return [
        Scenario("background-0.50", spec(TWO, (0.5, 0.5), (0, 0), 21, "others"), True),
        Scenario("background-0.90", spec(TWO, (0.9, 0.9), (0, 0), 22, "others"), False),
        Scenario("background-0.99", spec(TWO, (0.99, 0.99), (0, 0), 23, "others"), False),
        Scenario("corner-mark-one-class", spec(FOUR, (0,) * 4, (1.0, 0, 0, 0), 24), False),
        Scenario("corner-mark-half-of-one-class", spec(FOUR, (0,) * 4, (0.5, 0, 0, 0), 25), False),
        Scenario("corner-mark-every-class", spec(FOUR, (0,) * 4, (1.0,) * 4, 26), True),
        Scenario("clean", spec(FOUR, (0,) * 4, (0,) * 4, 27), True),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("datasets/detection-suite"))
    parser.add_argument("--out", type=Path, default=Path("reports/detection-suite"))
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-audit", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--reliance-drop", type=float, default=0.3)
    parser.add_argument("--only", help="Run only scenarios whose name contains this text.")
    parser.add_argument("--arch", default=ARCH, help="torchvision architecture to train.")
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="Shift every seed: fresh data and models (held-out draws).",
    )
    parser.add_argument("--config", type=Path, help="An audit.toml every audit runs with.")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    started = time.perf_counter()
    rows = []
    for s in scenarios(args.n_train, args.n_audit, args.seed_offset):
        if args.only and args.only not in s.name:
            continue
        recipe = Recipe(arch=args.arch, epochs=args.epochs)
        rows.append(run_scenario(s, args.root, args.out, recipe=recipe, drop=args.reliance_drop,
                                 config=args.config))  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'scenario':<32}{'reliant (truth)':<26}{'flagged':<26}{'prec':>6}{'recall':>8}"
          f"{'false-flag':>12}{'s/1000 img':>12}")  # fmt: skip
    for r in rows:
        p, rc, ff = rates(r["tp"], r["fp"], r["fn"], r["negatives"])
        reliant, flagged = ",".join(r["reliant"]) or "-", ",".join(r["flagged"]) or "-"
        print(f"{r['scenario']:<32}{reliant:<26}{flagged:<26}"
              f"{p:>6}{rc:>8}{ff:>12}{r['audit_s_per_1000']:>12}")  # fmt: skip
    totals = [sum(r[k] for r in rows) for k in ("tp", "fp", "fn", "negatives")]
    p, rc, ff = rates(*totals)
    controls_clean = all(not r["flagged"] for r in rows if r["negative_control"])
    print(f"{'overall':<84}{p:>6}{rc:>8}{ff:>12}")
    print(f"negative controls without any flag: {controls_clean}")
    print(f"suite wall time: {time.perf_counter() - started:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "suite.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
