"""Loader-only images/s beside Grad-CAM + saliency images/s on resnet18 at 224 px, for the same
synthetic data; the loader should be at least 3x faster, so that it is never the bottleneck.

    .venv/bin/python benchmarks/loader_throughput.py [--images 256] [--workers 2] [--device cpu]

Images are rendered at ``--source-size`` px (default 320) so the loader really decodes PNGs
and resizes them, as it would for a real dataset.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

from auditor.attribution import compute
from auditor.data import AuditDataset, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.lab.synthetic import SyntheticSpec, write_dataset
from auditor.models import resolve_target_layer

SIZE = 224


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="images the loader reads")
    parser.add_argument("--attr-images", type=int, default=64, help="images attributed")
    parser.add_argument("--source-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(4, len(os.sched_getaffinity(0))))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def make_loader(
    dataset: AuditDataset, args: argparse.Namespace, device: torch.device
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if args.workers else None,
    )


def loader_rate(dataset: AuditDataset, args: argparse.Namespace, device: torch.device) -> float:
    """Images/s of one full pass, worker start-up included."""
    started = time.perf_counter()
    count = 0
    for batch in make_loader(dataset, args, device):
        inputs = batch["inputs"].to(device, non_blocking=True)
        count += len(inputs)
    _sync(device)
    return count / (time.perf_counter() - started)


def attribution_rate(
    dataset: AuditDataset, args: argparse.Namespace, device: torch.device
) -> float:
    """Images/s of Grad-CAM + saliency (one fused pass) on batches already in memory."""
    model = torchvision.models.resnet18(num_classes=4).eval().to(device)
    layer = resolve_target_layer(model, None, image_size=SIZE, device=device)
    subset = torch.utils.data.Subset(dataset, range(min(args.attr_images, len(dataset))))
    batches = [
        (b["inputs"].to(device), b["targets"].to(device)) for b in make_loader(subset, args, device)
    ]
    compute(model, batches[0][0][:2], batches[0][1][:2], methods=("gradcam", "saliency"),
            target_layer=layer.module)  # fmt: skip
    _sync(device)
    started = time.perf_counter()
    for inputs, targets in batches:
        compute(model, inputs, targets, methods=("gradcam", "saliency"), target_layer=layer.module)
    _sync(device)
    return sum(len(x) for x, _ in batches) / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        spec = SyntheticSpec(image_size=args.source_size, n_train=0, n_audit=args.images, seed=0)
        annotations = write_dataset(spec, Path(folder))["audit"]
        dataset = AuditDataset(read_dataset(annotations).records, AuditTransform(SIZE))
        loader = loader_rate(dataset, args, device)
        attribution = attribution_rate(dataset, args, device)
    print(f"data: {args.images} synthetic PNGs at {args.source_size} px -> {SIZE} px, "
          f"batch {args.batch_size}, {args.workers} workers, device {device}, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"loader only:          {loader:8.1f} images/s")
    print(f"gradcam + saliency:   {attribution:8.1f} images/s  (resnet18, {SIZE} px)")
    print(f"ratio:                {loader / attribution:8.1f}x  (goal >= 3x)")


if __name__ == "__main__":
    main()
