"""Planted-shortcut scenarios run end to end: generate the data, train (or reuse) a model,
measure per class by intervention whether it relies on the cue, audit it through the CLI
exactly as a user would, and compare the flags with that truth. Shared by
``benchmarks/detection_suite.py`` and ``benchmarks/ladder.py``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.lab.demo import ARCH, EPOCHS, LR, DemoModel, ensure_dataset, ensure_model, ground_truth
from auditor.lab.synthetic import SyntheticSpec


@dataclass(frozen=True)
class Scenario:
    """A dataset spec; ``negative_control`` when nothing may be flagged whatever the truth."""

    name: str
    spec: SyntheticSpec
    negative_control: bool


@dataclass(frozen=True)
class Recipe:
    """How the scenario's model is trained: ``arch`` is a torchvision name or
    ``module:factory``; ``backbone`` a ``state_dict`` file to fine-tune from;
    ``recalibrate_norm`` re-estimates batch-norm statistics after training."""

    arch: str = ARCH
    epochs: int = EPOCHS
    lr: float = LR
    backbone: Path | None = None
    recalibrate_norm: bool = False


def run_scenario(
    s: Scenario,
    root: Path,
    out: Path,
    *,
    recipe: Recipe,
    drop: float,
    echo: Callable[[str], None] = print,
    config: Path | None = None,
) -> dict:
    """One scenario's row: truth, flags, counts against the truth and timings; ``config``:
    an audit.toml the audit runs with."""
    data_root = root / s.name
    paths = ensure_dataset(s.spec, data_root, echo=echo)
    started = time.perf_counter()
    weights = ensure_model(DemoModel(s.name, s.name, s.spec), data_root, paths["train"],
                           echo=echo, epochs=recipe.epochs, lr=recipe.lr, arch=recipe.arch,
                           backbone=recipe.backbone,
                           recalibrate_norm=recipe.recalibrate_norm)  # fmt: skip
    train_s = time.perf_counter() - started
    truth = ground_truth(weights, s.spec, data_root / "audit", reliance_drop=drop,
                         arch=recipe.arch)  # fmt: skip
    started = time.perf_counter()
    summary = audit(recipe.arch, weights, paths["audit"], out / s.name, s.spec.image_size, config)
    audit_s = time.perf_counter() - started
    flagged = set(summary["flagged_classes"])
    reliant = {t["class"] for t in truth if t["background_reliant"]}
    follows = {t["class"] for t in truth if t.get("follows_cue")}
    names = [t["class"] for t in truth]
    return {
        "scenario": s.name, "negative_control": s.negative_control, "truth": truth,
        "flagged": sorted(flagged), "reliant": sorted(reliant), "follows": sorted(follows),
        "fp_neither": len(flagged - reliant - follows),
        "status": {c["name"]: c["status"] for c in summary["classes"]},
        "tp": len(flagged & reliant), "fp": len(flagged - reliant), "fn": len(reliant - flagged),
        "negatives": len(set(names) - reliant), "train_s": round(train_s, 1),
        "audit_s_per_1000": round(1000 * audit_s / s.spec.n_audit, 1),
    }  # fmt: skip


def audit(
    model: str, weights: Path, data: Path, out: Path, image_size: int, config: Path | None = None
) -> dict:
    """An audit as ``auditor audit`` runs it (with ``config``, an audit.toml, if given;
    outside the run history: scenarios are not one model's successive runs); returns its
    ``summary.json``."""
    from auditor.config import config_from_dict, load_config
    from auditor.runner.workflow import audit_to_dir

    given: dict[str, Any] = {"image_size": image_size, "batch_size": 64}
    settings = load_config(config, **given) if config else config_from_dict({}, **given)
    audit_to_dir(model, weights=weights, data=data, out=out, config=settings, history=None)
    return json.loads((out / "summary.json").read_text())


def rates(tp: int, fp: int, fn: int, negatives: int) -> tuple[str, str, str]:
    """Precision, recall and false-flag rate as text, ``n/a`` where undefined."""

    def ratio(a: int, b: int) -> str:
        return f"{a / b:.2f}" if b else "n/a"

    return ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(fp, negatives)
