"""``auditor demo``: plant a background shortcut, train a shortcut and a control model,
measure by intervention which classes really use the background, then audit both models
through the same path as ``auditor audit`` and compare the flags with that ground truth."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import torch

from auditor.config import AuditConfig
from auditor.data.transforms import AuditTransform
from auditor.lab.drawing import render
from auditor.lab.models import file_name
from auditor.lab.synthetic import (
    SyntheticSpec,
    iter_interventions,
    read_scenes,
    spec_dict,
    with_cue_of,
    write_dataset,
)
from auditor.lab.training import (
    accuracy_by_class,
    load_tensors,
    predict,
    stack_images,
    train_classifier,
)
from auditor.models import file_sha256, read_state_dict
from auditor.progress import progress_bar
from auditor.report.templating import environment
from auditor.rundir import Output, atomic_write, claim
from auditor.runner.workflow import audit_to_dir

CLASSES = ("circle", "square", "triangle", "cross")
ARCH = "resnet18"
DEMO = Output("demo", files=("index.html", "shortcut", "control"), legacy="shortcut/run.json")
"""What ``auditor demo --out`` holds: an index and one audit run per demo model."""
IMAGE_SIZE = 64
EPOCHS = 10
LR = 1e-3
RELIANCE_DROP = 0.3  # accuracy lost when the background is swapped, to count as reliant


@dataclass(frozen=True)
class DemoModel:
    name: str
    description: str
    spec: SyntheticSpec


DEMO_MODELS = (
    DemoModel(
        "shortcut",
        "circles and squares almost always (98%) sit on their own background (water, foliage)",
        SyntheticSpec(classes=CLASSES, background_strength=(0.98, 0.98, 0.0, 0.0),
                      artefact_rate=(0.0,) * 4, image_size=IMAGE_SIZE, seed=11),
    ),
    DemoModel(
        "control",
        "backgrounds are independent of the class",
        SyntheticSpec(classes=CLASSES, background_strength=(0.0,) * 4,
                      artefact_rate=(0.0,) * 4, image_size=IMAGE_SIZE, seed=12),
    ),
)  # fmt: skip


def run_demo(out: Path, data_root: Path, *, echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Run the whole demo; returns per model the ground truth and the audit's flags."""
    config = AuditConfig(image_size=IMAGE_SIZE, batch_size=64)
    claim(out, DEMO)
    outcomes = {}
    for demo in DEMO_MODELS:
        root = data_root / f"demo-{demo.name}"
        paths = ensure_dataset(demo.spec, root, echo=echo)
        weights = ensure_model(demo, root, paths["train"], echo=echo)
        truth = ground_truth(weights, demo.spec, root / "audit")
        echo(_truth_table(demo, truth))
        run = audit_to_dir(
            ARCH,
            weights=weights,
            data=paths["audit"],
            out=out / demo.name,
            config=config,
            progress=True,
        )
        outcomes[demo.name] = {
            "truth": truth,
            "flagged": run.flagged_classes,
            "verdict": run.verdict,
            "description": demo.description,
        }
    _write_index(out, outcomes)
    echo(_final_summary(outcomes, out))
    return outcomes


def ensure_dataset(
    spec: SyntheticSpec, root: Path, *, echo: Callable[[str], None]
) -> dict[str, Path]:
    """Generate the dataset unless one from the same spec is already there."""
    paths = {s: root / s / "annotations.json" for s in ("train", "audit")}
    spec_file = root / "spec.json"
    if (
        spec_file.is_file()
        and json.loads(spec_file.read_text()) == _jsonable(spec)
        and all(p.is_file() for p in paths.values())
    ):
        return paths
    echo(f"Generating {root} ({spec.n_train} train + {spec.n_audit} audit images)")
    return write_dataset(spec, root)


def ensure_model(
    demo: DemoModel,
    root: Path,
    train: Path,
    *,
    echo: Callable[[str], None],
    epochs: int = EPOCHS,
    lr: float = LR,
    arch: str = ARCH,
    backbone: Path | None = None,
    recalibrate_norm: bool = False,
) -> Path:
    """Train (or reuse the ``state_dict`` cached for the same recipe and data spec).
    ``arch`` is a torchvision name or ``module:factory``; ``backbone``, a ``state_dict``
    file, makes it a fine-tuning of that model (the recipe then names its sha256);
    ``recalibrate_norm``: see :func:`train_classifier` (named in the recipe when set)."""
    stem = file_name(arch)
    weights, recipe_file = root / f"{stem}.pt", root / f"{stem}.json"
    recipe = {"arch": arch, "epochs": epochs, "lr": lr, "spec": _jsonable(demo.spec)}
    if backbone is not None:
        recipe["backbone"] = file_sha256(backbone)
    if recalibrate_norm:
        recipe["recalibrate_norm"] = True
    if (
        weights.is_file()
        and recipe_file.is_file()
        and json.loads(recipe_file.read_text()) == recipe
    ):
        echo(f"Using cached {demo.name} model {weights}")
        return weights
    transform = AuditTransform(demo.spec.image_size)
    inputs, targets = load_tensors(train, transform)
    with progress_bar(epochs * len(inputs), desc=f"train {demo.name}") as bar:
        model = train_classifier(
            inputs,
            targets,
            arch=arch,
            num_classes=len(demo.spec.classes),
            epochs=epochs,
            lr=lr,
            seed=demo.spec.seed,
            progress=bar,
            backbone=None if backbone is None else read_state_dict(backbone),
            recalibrate_norm=recalibrate_norm,
        )
    tmp = weights.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(weights)
    recipe_file.write_text(json.dumps(recipe, indent=2))
    return weights


def ground_truth(
    weights: Path,
    spec: SyntheticSpec,
    audit_folder: Path,
    *,
    reliance_drop: float = RELIANCE_DROP,
    arch: str = ARCH,
) -> list[dict]:
    """Per class: accuracy on held-out images, and on the same objects re-rendered on a
    neutral background they were not on (mark removed). A large drop means the class is
    solved through the background: ground truth by intervention, not by how data was planted.

    Also per class, the other direction (``cue_follow``): the other classes' objects, on
    those neutral backgrounds, given instead the background and artefact of one of this
    class's images; the share then predicted as this class, less the share on the neutral
    backgrounds. A large value means the class's cue takes over objects that are not its
    own (``follows_cue``), even where its own images would be recognised without it."""
    from auditor.models import load_model

    model = load_model(arch, weights).model
    transform = AuditTransform(spec.image_size)
    scenes = read_scenes(audit_folder)
    targets = torch.tensor([s.label for s in scenes])
    original = predict(model, stack_images([render(s) for s in scenes], transform))
    swapped_scenes = list(iter_interventions(scenes, spec, seed=spec.seed + 99))
    swapped = predict(model, stack_images([render(s) for s in swapped_scenes], transform))
    k = len(spec.classes)
    before, after = accuracy_by_class(original, targets, k), accuracy_by_class(swapped, targets, k)
    follow = []
    for c in range(k):
        others = [i for i, s in enumerate(scenes) if s.label != c]
        donors = [s for s in scenes if s.label == c]
        moved = with_cue_of([swapped_scenes[i] for i in others], donors, seed=spec.seed + 101 + c)
        taken = predict(model, stack_images([render(s) for s in moved], transform)) == c
        follow.append(float(taken.float().mean() - (swapped[others] == c).float().mean()))
    return [
        {"class": name, "accuracy": b, "swapped_accuracy": a, "drop": b - a,
         "background_reliant": b - a >= reliance_drop, "cue_follow": f,
         "follows_cue": f >= reliance_drop}
        for name, b, a, f in zip(spec.classes, before, after, follow)
    ]  # fmt: skip


def _truth_table(demo: DemoModel, truth: list[dict]) -> str:
    lines = [
        f"Ground truth for the {demo.name} model ({demo.description}):",
        "  class       accuracy  bg-swapped  drop   background-reliant",
    ]
    lines += [
        f"  {t['class']:<10}  {t['accuracy']:>7.1%}  {t['swapped_accuracy']:>9.1%}  "
        f"{t['drop']:+.2f}  {'yes' if t['background_reliant'] else 'no'}"
        for t in truth
    ]
    return "\n".join(lines)


def _final_summary(outcomes: dict[str, dict], out: Path) -> str:
    lines = ["", "Demo summary (flags against intervention ground truth):"]
    for name, o in outcomes.items():
        reliant = sorted(t["class"] for t in o["truth"] if t["background_reliant"])
        flagged = sorted(o["flagged"])
        agree = "agrees" if reliant == flagged else "DISAGREES"
        lines.append(
            f"  {name:<9} verdict {o['verdict'].upper():<4}  "
            f"flagged: {', '.join(flagged) or 'none':<18}"
            f" reliant by intervention: {', '.join(reliant) or 'none':<18} -> {agree}"
        )
    lines.append(f"Open {out / 'index.html'}")
    return "\n".join(lines)


def _write_index(out: Path, outcomes: dict[str, dict]) -> None:
    template: jinja2.Template = environment().get_template("index.html.j2")
    atomic_write(out / "index.html", template.render(outcomes=outcomes).encode("utf-8"))


def _jsonable(spec: SyntheticSpec) -> dict:
    return json.loads(json.dumps(spec_dict(spec)))
