"""Would a hijack test that needs no mask see a cue painted over the object? A measurement on
finished ladder audits, not part of the audit.

The audit's hijack test pastes other classes' objects onto this class's backgrounds. A cue
drawn over the object (ImageNet-W's watermark runs across the middle of the image, 42% of
its pixels on the object) leaves the donor background with the object, so the test cannot
see it. The test measured here builds each class's **mean background** instead: per pixel,
the mean over the class's images whose object box (dilated as the audit dilates it) leaves
that pixel out. A pattern fixed to the image frame survives the mean wherever some image's
object leaves it uncovered; objects and textures at random places average out. The class's
mean background minus that of the neutral classes (the audit's own choice, from its
background-only answers; every other class when no other is neutral) is added to every
other class's right-answered image, over its object too, as ImageNet-W draws it; the share
called this class is held against the same images with a neutral class's overlay, called
that class or this one (the stricter, as the audit's hijack test), by a one-sided Fisher
test, BH-adjusted across classes, and a finding needs q < ``q`` and the Newcombe CI's lower
end above ``min_gap``: the audit's hijack bar.

Usage (the ladder's folders: ``--root`` data with the trained models, ``--out`` audits)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/overlay_hijack.py \\
        --data /tmp/lad/data-100 --audits /tmp/lad/after-d100 [--data ... --audits ...]

Each audit folder (one with ``samples.parquet`` and ``run.json``) is matched to the data
folder ``DATA/<rung>/<scenario>`` by its last two path parts; the model is the one ``.pt``
there, loaded with the audit's model spec, image size and normalisation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import fisher_exact

sys.path.insert(0, str(Path(__file__).parent))  # the photo rung's "photos:" model specs

from auditor.config import DetectConfig
from auditor.data.dataset import AuditDataset
from auditor.data.read import read_dataset
from auditor.data.transforms import AuditTransform
from auditor.detect.interventions import bounding_boxes, margin
from auditor.detect.rule import background_identifies, identifications
from auditor.detect.stats_util import benjamini_hochberg, newcombe
from auditor.models import load_model


def mean_backgrounds(inputs: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, k: int):
    """Per class, Tensor[C, H, W]: each pixel's mean over the class's images whose object box
    leaves it out (0 where every box covers it)."""
    off = (~boxes)[:, None].to(inputs.dtype)
    out = []
    for c in range(k):
        chosen = labels == c
        out.append((inputs[chosen] * off[chosen]).sum(0) / off[chosen].sum(0).clamp_min(1))
    return torch.stack(out)


def neutral_classes(samples: pd.DataFrame, k: int, config: DetectConfig) -> list[int]:
    """The audit's neutral classes: their backgrounds alone do not identify them."""
    images = samples[samples["skip_reason"].isna()].drop_duplicates("sample")
    idents = identifications(images, k, config.confidence)
    return [c for c, ident in idents.items() if not background_identifies(ident, config)]


@torch.no_grad()
def overlay_tests(audit: Path, data: Path, config: DetectConfig) -> list[dict]:
    run = json.loads((audit / "run.json").read_text())
    (weights,) = data.glob("*.pt")
    model = load_model(run["model"]["spec"], weights).model.eval()
    transform = AuditTransform(run["config"]["image_size"], run["config"]["normalize"])
    dataset = AuditDataset(read_dataset(data / "audit" / "annotations.json").records, transform)
    items = [dataset[i] for i in range(len(dataset))]
    inputs = torch.stack([s["inputs"] for s in items])
    labels = torch.tensor([s["targets"] for s in items])
    masks = torch.stack([s["masks"] for s in items]).bool().reshape(len(items), *inputs.shape[-2:])
    k = int(run["model"]["num_classes"])
    right = model(inputs).argmax(1) == labels
    means = mean_backgrounds(inputs, bounding_boxes(masks, grow=margin(masks)), labels, k)
    neutral = neutral_classes(pd.read_parquet(audit / "samples.parquet"), k, config)

    def references(c: int) -> list[int]:
        return [d for d in neutral if d != c] or [d for d in range(k) if d != c]

    overlays = [means[c] - means[references(c)].mean(0) for c in range(k)]
    answers = [model(inputs + overlay).argmax(1) for overlay in overlays]
    rows = []
    for c in range(k):
        others = right & (labels != c)
        called, n = int((answers[c][others] == c).sum()), int(others.sum())
        cells = [(answers[d][others & (labels != d)], d) for d in references(c)]
        pulls = {"background": sum(int((a == d).sum()) for a, d in cells),
                 "class": sum(int((a == c).sum()) for a, _ in cells)}  # fmt: skip
        ref_n = sum(len(a) for a, _ in cells)
        pull = max(pulls, key=pulls.get)
        ref = pulls[pull]
        p = fisher_exact([[called, n - called], [ref, ref_n - ref]], alternative="greater").pvalue
        ci = newcombe((called, n), (ref, ref_n), config.confidence)
        rows.append({"class": c, "called": called, "n": n, "reference": ref,
                     "reference_n": ref_n, "pull": pull, "p": float(p), "ci95": ci,
                     "neutral": neutral})  # fmt: skip
    for row, q in zip(rows, benjamini_hochberg([r["p"] for r in rows])):
        row["q"] = float(q)
        row["found"] = bool(q < config.q and row["ci95"][0] > config.min_gap)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--audits", type=Path, action="append", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = DetectConfig()
    print(f"{'scenario':<52}{'class':>6}{'called':>12}{'reference':>14}{'q':>9}"
          f"{'CI95':>15}  found")  # fmt: skip
    for data_root, audit_root in zip(args.data, args.audits, strict=True):
        for samples in sorted(audit_root.rglob("samples.parquet")):
            audit = samples.parent
            data = data_root / audit.parent.name / audit.name
            if not (data / "audit").is_dir():
                continue
            for row in overlay_tests(audit, data, config):
                ci = f"[{row['ci95'][0]:+.2f}, {row['ci95'][1]:+.2f}]"
                print(f"{data.relative_to(data_root.parent)!s:<52}{row['class']:>6}"
                      f"{row['called']:>5}/{row['n']:<6}{row['reference']:>6}/{row['reference_n']:<7}"
                      f"{row['q']:>9.2g}{ci:>15}  {'yes' if row['found'] else '-'}")  # fmt: skip


if __name__ == "__main__":
    main()
