"""The audit's mean-background hijack test (:mod:`auditor.detect.overlay`) added to stored ladder
audits that predate it, so that its effect on their statuses can be judged without running
the audits again.

For each stored audit (a folder with ``samples.parquet``, ``summary.json`` and ``run.json``)
the test runs as the audit runs it (:func:`auditor.runner.overlays.overlay_hijacks`): the
model loaded with the audit's spec, image size and normalisation; ``overlay_images`` images
spread evenly over the audited dataset; the neutral classes the audit's rows give. Each
class's test is written into the audit's ``summary.json`` (``overlay_hijack``, as a new audit
writes it), **in place**: run it on a copy. Then ``rejudge.py`` judges the copy with it, and
``status_changes.py --rejudge-before ORIGINAL COPY`` lists what it changed.

    cp -r /tmp/lad/after-d100 /tmp/lad/overlay-d100
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overlay_hijack.py \\
        --data /tmp/lad/data-100 --audits /tmp/lad/overlay-d100 [--data ... --audits ...]

Each audit folder is matched to the data folder ``DATA/<rung>/<scenario>`` by its last two
path parts; the model is the one ``.pt`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the photo rung's "photos:" model specs

from auditor.config import AuditConfig, DetectConfig
from auditor.data.read import read_dataset
from auditor.detect.rule import neutral_classes
from auditor.models import load_model
from auditor.runner.overlays import overlay_hijacks
from auditor.runner.pipeline import transform_of
from auditor.runner.preflight import Probe, probe_samples


@dataclass(frozen=True)
class StoredAudit:
    """What a stored audit ran with: its model, settings, dataset and rows."""

    model: torch.nn.Module
    config: AuditConfig
    records: list
    k: int
    rows: pd.DataFrame

    @classmethod
    def read(cls, audit: Path, data: Path) -> StoredAudit:
        """The audit folder's run, with the one model in ``data`` and its audited images."""
        run = json.loads((audit / "run.json").read_text())
        (weights,) = data.glob("*.pt")
        settings = run["config"]
        detect = DetectConfig(**{k: v for k, v in settings["detect"].items()
                                 if k in DetectConfig.__dataclass_fields__})  # fmt: skip
        config = AuditConfig(image_size=settings["image_size"], normalize=settings["normalize"],
                             keep_aspect=settings["keep_aspect"],
                             batch_size=settings["batch_size"], detect=detect)  # fmt: skip
        return cls(
            load_model(run["model"]["spec"], weights).model.eval(), config,
            read_dataset(data / "audit" / "annotations.json").records,
            int(run["model"]["num_classes"]), pd.read_parquet(audit / "samples.parquet"),
        )  # fmt: skip

    def neutral(self) -> list[int]:
        return neutral_classes(self.rows, self.k, self.config.detect)

    def sample(self) -> Probe | None:
        """The images the audit's overlay phase samples."""
        size, cpu = self.config.overlay_images, torch.device("cpu")
        return probe_samples(self.records, transform_of(self.config), size=size, device=cpu)


def stored_audits(data_root: Path, audit_root: Path) -> Iterator[tuple[Path, Path]]:
    """(audit folder, its data folder ``DATA/<rung>/<scenario>``) of every stored audit."""
    for samples in sorted(audit_root.rglob("samples.parquet")):
        data = data_root / samples.parent.parent.name / samples.parent.name
        if (data / "audit").is_dir():
            yield samples.parent, data


def add_overlay_tests(audit: Path, data: Path) -> list[dict]:
    """Run the test on a stored audit and store it there; the tests, as stored."""
    stored = StoredAudit.read(audit, data)
    config, answered = stored.config, dict(zip(stored.rows["sample"], stored.rows["correct"]))
    found = overlay_hijacks(stored.model, stored.sample, stored.k, stored.neutral(), config,
                            transform_of(config), answered)  # fmt: skip
    tests = {t.donor: t.to_dict() for t in found.tests}
    summary = json.loads((audit / "summary.json").read_text())
    for c in summary["classes"]:
        c.pop("overlay_hijack", None)
        if c["index"] in tests:
            c["overlay_hijack"] = tests[c["index"]]
    (audit / "summary.json").write_text(json.dumps(summary, indent=2))
    return list(tests.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--audits", type=Path, action="append", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'scenario':<52}{'class':>6}{'called':>12}{'reference':>14}{'p':>9}{'CI95':>15}")
    for data_root, audit_root in zip(args.data, args.audits, strict=True):
        for audit, data in stored_audits(data_root, audit_root):
            for t in add_overlay_tests(audit, data):
                ci = f"[{t['ci'][0]:+.2f}, {t['ci'][1]:+.2f}]"
                print(f"{data.relative_to(data_root.parent)!s:<52}{t['donor']:>6}"
                      f"{t['called']:>5}/{t['n']:<6}{t['reference_called']:>6}/{t['reference_n']:<7}"
                      f"{t['p']:>9.2g}{ci:>15}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
