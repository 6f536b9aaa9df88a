"""How big the report of a many-class audit gets, and how long it takes to render: an
ImageNet-sized label set (1,000 classes by default) audited with a tiny CNN, so the time is
the report's and not the model's.

    .venv/bin/python benchmarks/report_scale.py --classes 1000 --images 1000

Prints the sizes of report.html, report.pdf and evidence.pt, the PDF's pages, the time the
reports took to render (``report_s`` of run.json) and to render again (``auditor report``),
and the whole audit's time. The README states the bound these numbers are held to.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from auditor.config import AuditConfig
from auditor.models import LoadedModel
from auditor.report.render import rerender
from auditor.run import load_run
from auditor.runner.workflow import audit_to_dir


def write_dataset(folder: Path, *, classes: int, images: int, size: int, seed: int) -> Path:
    """``images`` noise images, each with one box object of a flat colour, spread evenly
    over ``classes`` categories, as COCO."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    coco: dict = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": c + 1, "name": f"class {c:04d}"} for c in range(classes)]
    for i in range(images):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        x0, y0 = (int(v) for v in rng.integers(2, size // 2, 2))
        w, h = (int(v) for v in rng.integers(size // 4, size // 2, 2))
        pixels[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3, dtype=np.uint8)
        name = f"images/{i:05d}.png"
        Image.fromarray(pixels).save(folder / name)
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        coco["annotations"].append({
            "id": i + 1, "image_id": i + 1, "category_id": i % classes + 1,
            "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0,
        })  # fmt: skip
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def tiny_model(classes: int) -> LoadedModel:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    )  # fmt: skip
    return LoadedModel(net.eval(), "tiny-cnn", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--out", type=Path, help="Keep the run here (default: a temp folder).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "data", classes=args.classes, images=args.images,
                             size=args.image_size, seed=0)  # fmt: skip
        out = args.out or Path(tmp) / "run"
        config = AuditConfig(image_size=args.image_size, batch_size=64)
        started = time.perf_counter()
        audit_to_dir(tiny_model(args.classes), data=data, out=out, config=config, force=True)
        audit_s = time.perf_counter() - started
        info = json.loads((out / "run.json").read_text())
        started = time.perf_counter()
        rerender(load_run(out), out)
        again_s = time.perf_counter() - started
        print(f"{args.classes} classes, {args.images} images at {args.image_size} px")
        for name in ("report.html", "report.pdf", "evidence.pt", "samples.parquet"):
            print(f"  {name:<16} {(out / name).stat().st_size / 1e6:8.2f} MB")
        print(f"  PDF pages        {_pages(out / 'report.pdf')}")
        print(f"  report render    {info['timings']['report_s']:8.1f} s (in the audit)")
        print(f"  report again     {again_s:8.1f} s (auditor report)")
        print(f"  whole audit      {audit_s:8.1f} s")


def _pages(pdf: Path) -> str:
    try:
        from pypdf import PdfReader
    except ImportError:
        return "n/a (pypdf not installed)"
    return str(len(PdfReader(pdf).pages))


if __name__ == "__main__":
    main()
