"""The validation ladder (issue 14): detection against intervention truth on rungs that look
more like real audits: image sizes 64-224, objects covering about 5-50% of the image,
several architectures (a small ViT and a small ConvNeXt through ``module:factory``), a
fine-tuned backbone, and cues on the background (texture), off the object (corner mark,
watermark at a random position, coloured frame) and, as a negative control, on the object
itself (class-coloured objects: nothing may be flagged).

    .venv/bin/python benchmarks/ladder.py              # the whole ladder
    .venv/bin/python benchmarks/ladder.py --quick      # the 64 px resnet18 rungs
    .venv/bin/python benchmarks/ladder.py --seed-offset 100   # the held-out draw
    .venv/bin/python benchmarks/ladder.py --photos            # ... and the photo rungs
    .venv/bin/python benchmarks/ladder.py --photos --only lite0-photo   # only those

``--photos`` adds the rungs of ``benchmarks/photo_rung.py`` (issue 23: real photographs,
EfficientNet-Lite0 with its ImageNet weights fine-tuned at 128 and 224 px) after the others.

Models are cached under ``--root`` by data spec and recipe. Prints per rung precision,
recall, the false-flag rate (flags on classes the intervention found not reliant), the
flags and warnings on negative-control scenarios (``flags/warns of classes``), the
warnings on the clean classes (``clean warn``: classes the truth found neither reliant nor
followed, of such classes), the classes used though not needed (not reliant, but their cue
takes other objects over) that passed silently (``silent``), the
audit's seconds per 1,000 images, and the classes whose cue, moved onto the other classes'
objects, takes them over (``cue followed``: the other direction of the truth, reported
beside it, not counted in the rates); writes ``suite.json``. ``--table suite.json [...]``
prints the table of finished runs again.
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import photo_rung
import torch

from auditor.lab.demo import DemoModel, ensure_dataset, ensure_model
from auditor.lab.drawing import SHAPES
from auditor.lab.scenarios import Recipe, Scenario, rates, run_scenario
from auditor.lab.synthetic import SyntheticSpec

FOUR = ("circle", "square", "triangle", "cross")
WIDE = (0.13, 0.40)  # circumradius / side: a circle covers 5-50% of the image
MIN_ACCURACY = 0.5  # mean class accuracy (chance 0.25) below which a model is not judged
VIT = "auditor.lab.models:small_vit"
CONVNEXT = "auditor.lab.models:small_convnext"

#: Per cue: scenario name -> (SyntheticSpec fields, negative control).
CUES: dict[str, dict[str, tuple[dict, bool]]] = {
    "texture": {
        "texture-two-classes": ({"background_strength": (0.95, 0.95, 0, 0)}, False),
        "texture-none": ({}, True),
    },
    "corner": {
        "corner-one-class": ({"artefact_rate": (1.0, 0, 0, 0)}, False),
        "corner-every-class": ({"artefact_rate": (1.0,) * 4}, True),
    },
    "watermark": {
        "watermark-one-class": ({"artefact": "watermark", "artefact_rate": (1.0, 0, 0, 0)}, False),
        "watermark-every-class": ({"artefact": "watermark", "artefact_rate": (1.0,) * 4}, True),
    },
    "frame": {
        "frame-one-class": ({"artefact": "frame", "artefact_rate": (1.0, 0, 0, 0)}, False),
        "frame-every-class": ({"artefact": "frame", "artefact_rate": (1.0,) * 4}, True),
    },
    "colour": {"object-colour": ({"object_colour_strength": (0.95,) * 4}, True)},
}


@dataclass(frozen=True)
class Rung:
    """One rung: a model recipe and data shape, and the cues (keys of :data:`CUES`) planted
    in its scenarios; ``scenarios`` keeps a subset of those cues' scenario names."""

    name: str
    arch: str
    image_size: int
    cues: tuple[str, ...]
    object_radius: tuple[float, float] = WIDE
    n_train: int = 1200
    n_audit: int = 400
    epochs: int = 8
    lr: float = 1e-3
    transfer: bool = False
    recalibrate_norm: bool = False
    quick: bool = False
    scenarios: tuple[str, ...] = field(default=())


QUICK = {"n_train": 1200, "n_audit": 400, "epochs": 8, "quick": True}
ONE_CLASS = ("watermark-one-class", "frame-one-class", "texture-two-classes", "object-colour")

RUNGS = (
    Rung("r18-64-watermark", "resnet18", 64, ("watermark",), scenarios=ONE_CLASS, **QUICK),
    Rung("r18-64-frame", "resnet18", 64, ("frame",), scenarios=ONE_CLASS, **QUICK),
    Rung("r18-64-colour", "resnet18", 64, ("colour",), **QUICK),
    Rung("r18-64-texture", "resnet18", 64, ("texture",), scenarios=ONE_CLASS, **QUICK),
    Rung("r18-64-controls", "resnet18", 64, ("watermark", "frame", "texture"),
         scenarios=("watermark-every-class", "frame-every-class", "texture-none"),
         n_train=1200, n_audit=400, epochs=8),
    Rung("r18-128", "resnet18", 128, ("texture", "corner"), n_train=1000, epochs=6,
         scenarios=("texture-two-classes", "texture-none", "corner-one-class")),
    Rung("r18-224", "resnet18", 224, ("corner", "frame"), n_train=800, n_audit=300, epochs=4,
         scenarios=("corner-one-class", "frame-one-class")),
    Rung("mobilenet-128", "mobilenet_v3_small", 128, ("watermark", "frame", "colour"),
         n_train=1000, epochs=10, recalibrate_norm=True),
    Rung("efficientnet-128", "efficientnet_b0", 128, ("texture", "corner"), n_train=1000,
         epochs=6, recalibrate_norm=True,
         scenarios=("texture-two-classes", "corner-one-class", "corner-every-class")),
    Rung("r50-128", "resnet50", 128, ("corner", "colour"), n_train=800, n_audit=300, epochs=4,
         scenarios=("corner-one-class", "object-colour")),
    Rung("convnext-64", CONVNEXT, 64, ("texture", "watermark"), epochs=60, lr=2e-3),
    Rung("vit-64", VIT, 64, ("texture", "frame", "colour"), epochs=15, lr=5e-4),
    Rung("r18-64-transfer", "resnet18", 64, ("texture", "watermark"), transfer=True, epochs=4,
         lr=3e-4),
)  # fmt: skip


def rung_scenarios(rung: Rung, seed_offset: int) -> list[Scenario]:
    """The rung's scenarios, each seeded from its own name (stable under reordering)."""
    found = []
    for cue in rung.cues:
        for name, (fields, control) in CUES[cue].items():
            if rung.scenarios and name not in rung.scenarios:
                continue
            base = {"background_strength": (0.0,) * 4, "artefact_rate": (0.0,) * 4}
            spec = SyntheticSpec(
                classes=FOUR, image_size=rung.image_size, n_train=rung.n_train,
                n_audit=rung.n_audit, seed=_seed(f"{rung.name}/{name}") + seed_offset,
                object_radius=rung.object_radius, **{**base, **fields},
            )  # fmt: skip
            found.append(Scenario(name, spec, control))
    return found


def pretrained_backbone(rung: Rung, root: Path, seed_offset: int) -> Path:
    """A model of the rung's architecture trained on another synthetic task (all six shapes
    on clean, class-independent backgrounds, other object sizes): the backbone that the
    transfer rung fine-tunes, as users fine-tune ImageNet models."""
    spec = SyntheticSpec(classes=SHAPES, background_strength=(0.0,) * 6,
                         artefact_rate=(0.0,) * 6, image_size=rung.image_size, n_train=2400,
                         n_audit=60, seed=_seed(f"{rung.name}/pretrain") + seed_offset,
                         object_radius=(0.2, 0.35))  # fmt: skip
    folder = root / "pretrain"
    paths = ensure_dataset(spec, folder, echo=print)
    task = DemoModel("pretrain", "six shapes, no cue", spec)
    return ensure_model(task, folder, paths["train"], echo=print, epochs=8, arch=rung.arch)


def run_rung(
    rung: Rung, root: Path, out: Path, *, seed_offset: int, drop: float, scenario: str = ""
) -> dict:
    """The rung's rows; a model whose mean class accuracy stays under :data:`MIN_ACCURACY`
    is marked not usable and left out of the rates (its truth would be meaningless)."""
    backbone = pretrained_backbone(rung, root / rung.name, seed_offset) if rung.transfer else None
    recipe = Recipe(arch=rung.arch, epochs=rung.epochs, lr=rung.lr, backbone=backbone,
                    recalibrate_norm=rung.recalibrate_norm)  # fmt: skip
    rows = []
    for s in rung_scenarios(rung, seed_offset):
        if scenario not in s.name:
            continue
        rows.append(run_scenario(s, root / rung.name, out / rung.name, recipe=recipe, drop=drop))
        accuracy = sum(t["accuracy"] for t in rows[-1]["truth"]) / len(rows[-1]["truth"])
        rows[-1].update(mean_accuracy=round(accuracy, 3), usable=accuracy >= MIN_ACCURACY)
        print(json.dumps({"rung": rung.name, **rows[-1]}), flush=True)
    return {"rung": rung.name, "arch": rung.arch, "image_size": rung.image_size,
            "object_radius": rung.object_radius, "transfer": rung.transfer, "scenarios": rows,
            **_totals(rows)}  # fmt: skip


def _totals(rows: list[dict]) -> dict:
    rows = [r for r in rows if r.get("usable", True)]
    counts = {k: sum(r[k] for r in rows) for k in ("tp", "fp", "fn", "negatives")}
    controls = [r for r in rows if r["negative_control"]]
    return {
        **counts,
        "fp_neither": sum(r.get("fp_neither", r["fp"]) for r in rows),
        "control_flags": sum(len(r["flagged"]) for r in controls),
        "control_warns": sum(list(r["status"].values()).count("warn") for r in controls),
        "control_classes": sum(len(r["truth"]) for r in controls),
        "clean_warns": sum(_clean_warns(r) for r in rows),
        "clean_classes": sum(len(_clean(r)) for r in rows),
        "silent": sum(_silent(r) for r in rows),
        "audit_s_per_1000": round(sum(r["audit_s_per_1000"] for r in rows) / max(len(rows), 1), 1),
    }


def _clean(row: dict) -> set[str]:
    """The classes of a scenario that the truth found not reliant and whose cue (if any) no
    other object follows: nothing about their background is worth a warning."""
    return set(row["status"]) - set(row["reliant"]) - set(row.get("follows", []))


def _clean_warns(row: dict) -> int:
    """The clean classes of a scenario that the audit warned on."""
    return sum(row["status"][c] == "warn" for c in _clean(row))


def _silent(row: dict) -> int:
    """Classes used though not needed (not reliant, their cue followed by other objects)
    that the audit passed: a deployment risk that must never pass silently."""
    used = set(row.get("follows", [])) - set(row["reliant"])
    return sum(row["status"].get(c) == "pass" for c in used)


def table(results: list[dict]) -> str:
    head = (f"{'rung':<18}{'scenario':<24}{'reliant (truth)':<18}{'flagged':<18}{'prec':>6}"
            f"{'recall':>8}{'false-flag':>11}{'ctrl flag/warn':>15}{'clean warn':>11}"
            f"{'silent':>7}{'s/1000 img':>11}  {'cue followed':<18}")  # fmt: skip
    lines = [head]
    for result in results:
        for r in result["scenarios"]:
            if not r.get("usable", True):
                lines.append(f"{result['rung']:<18}{r['scenario']:<24}model not usable: mean "
                             f"class accuracy {r['mean_accuracy']:.2f}")  # fmt: skip
                continue
            p, rc, ff = rates(r["tp"], r["fp"], r["fn"], r["negatives"])
            warns = list(r["status"].values()).count("warn")
            ctrl = f"{len(r['flagged'])}/{warns} of {len(r['truth'])}"
            ctrl = ctrl if r["negative_control"] else "-"
            follows = _names(r["follows"]) if "follows" in r else "not measured"
            clean = f"{_clean_warns(r)}/{len(_clean(r))}"
            lines.append(f"{result['rung']:<18}{r['scenario']:<24}{_names(r['reliant']):<18}"
                         f"{_names(r['flagged']):<18}{p:>6}{rc:>8}{ff:>11}{ctrl:>15}{clean:>11}"
                         f"{_silent(r):>7}{r['audit_s_per_1000']:>11}  {follows:<18}")  # fmt: skip
        rung = _totals(result["scenarios"])
        p, rc, ff = rates(rung["tp"], rung["fp"], rung["fn"], rung["negatives"])
        ctrl = f"{rung['control_flags']}/{rung['control_warns']} of {rung['control_classes']}"
        clean = f"{rung['clean_warns']}/{rung['clean_classes']}"
        lines.append(f"{result['rung'] + ' (rung)':<78}{p:>6}{rc:>8}{ff:>11}{ctrl:>15}"
                     f"{clean:>11}{rung['silent']:>7}{rung['audit_s_per_1000']:>11}")  # fmt: skip
    totals = _totals([r for result in results for r in result["scenarios"]])
    p, rc, ff = rates(totals["tp"], totals["fp"], totals["fn"], totals["negatives"])
    ctrl = f"{totals['control_flags']}/{totals['control_warns']} of {totals['control_classes']}"
    clean = f"{totals['clean_warns']}/{totals['clean_classes']}"
    lines.append(f"{'overall':<78}{p:>6}{rc:>8}{ff:>11}{ctrl:>15}{clean:>11}{totals['silent']:>7}")
    lines.append(f"false flags on classes whose cue no other object follows either: "
                 f"{totals['fp_neither']} of {totals['fp']}")  # fmt: skip
    return "\n".join(lines)


def _names(classes: list[str]) -> str:
    return ",".join(c[:4] for c in classes) or "-"


def _seed(name: str) -> int:
    return zlib.crc32(name.encode()) % 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="Default datasets/ladder[-offset-N].")
    parser.add_argument("--out", type=Path, default=Path("reports/ladder"))
    parser.add_argument("--quick", action="store_true", help="Only the 64 px resnet18 rungs.")
    parser.add_argument("--only", help="Run only rungs whose name contains this text.")
    parser.add_argument("--scenario", default="", help="... and scenarios whose name does.")
    parser.add_argument("--reliance-drop", type=float, default=0.3)
    parser.add_argument("--photos", action="store_true",
                        help="Also the photo rungs (benchmarks/photo_rung.py).")  # fmt: skip
    parser.add_argument("--table", type=Path, nargs="+", help="Only print these suite.json.")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="Shift every seed: fresh data and models (held-out).")  # fmt: skip
    args = parser.parse_args()
    if args.table:
        print(table([rung for path in args.table for rung in json.loads(path.read_text())]))
        return
    suffix = f"-offset-{args.seed_offset}" if args.seed_offset else ""
    root = args.root or Path(f"datasets/ladder{suffix}")
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    started = time.perf_counter()
    rungs = [r for r in RUNGS if (r.quick or not args.quick) and (args.only or "") in r.name]
    results = []
    for rung in rungs:
        results.append(run_rung(rung, root, args.out, seed_offset=args.seed_offset,
                                drop=args.reliance_drop, scenario=args.scenario))  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "suite.json").write_text(json.dumps(results, indent=2))
    photos = [r for r in photo_rung.RUNGS if args.photos and (args.only or "") in r.name]
    for photo in photos:
        result = photo_rung.run_rung(photo, root, args.out, seed_offset=args.seed_offset,
                                     drop=args.reliance_drop, scenario=args.scenario)  # fmt: skip
        results.append({**result, **_totals(result["scenarios"])})
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "suite.json").write_text(json.dumps(results, indent=2))
    print("\n" + table(results))
    print(f"ladder wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
