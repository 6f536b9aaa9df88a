"""The whole audit against a bare pass: how many times a forward + input-backward loop over
the same images does ``auditor audit`` cost, and where the rest goes.

    .venv/bin/python benchmarks/audit_throughput.py --model resnet50 --weights W.pt \
        --data annotations.json --image-size 224 --batch-size 32 --threads 1 --rounds 3

or, with ``--synthetic DIR`` instead of ``--weights``/``--data``, on a planted-shortcut
dataset generated there and a model of ``--model`` trained on it (both cached in DIR):

    .venv/bin/python benchmarks/audit_throughput.py --model resnet50 --image-size 224 \
        --synthetic datasets/throughput-r50-224 [--audit-images 3000]

Each round runs the bare loop (the same images, batch size, device and threads: a forward
and a backward to the input of the label's logit, the least any gradient method needs) and
then the audit through the library (default methods, interventions on, no PDF, no history),
interleaved, so load on the machine falls on both. Prints per round the two times and their
ratio, then the median ratio and the audit's phase split from its ``run.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from auditor.config import AuditConfig
from auditor.data import AuditDataset, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.lab.demo import DemoModel, ensure_dataset, ensure_model
from auditor.lab.synthetic import SyntheticSpec
from auditor.models import load_model
from auditor.runner.workflow import audit_to_dir


def bare_loop(net: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Seconds for a forward + input-backward of the label's logit over every batch."""
    started = time.perf_counter()
    for batch in loader:
        keep = torch.tensor([not s for s in batch["skip"]])
        inputs = batch["inputs"][keep].to(device).requires_grad_(True)
        targets = batch["targets"][keep].to(device)
        logits = net(inputs)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), inputs)
        grad.abs().amax(1).sum().item()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


@torch.no_grad()
def forward_loop(net: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Seconds for a no-grad forward over every batch: what each intervention costs."""
    started = time.perf_counter()
    for batch in loader:
        keep = torch.tensor([not s for s in batch["skip"]])
        net(batch["inputs"][keep].to(device)).argmax(1).sum().item()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def synthetic(args: argparse.Namespace) -> tuple[Path, Path]:
    """A planted-shortcut dataset (circle and square on their own backgrounds 90% of the
    time) at ``--image-size``, and ``--model`` trained on it, cached in ``--synthetic``."""
    spec = SyntheticSpec(
        classes=("circle", "square", "triangle", "cross"),
        background_strength=(0.9, 0.9, 0.0, 0.0),
        artefact_rate=(0.0,) * 4,
        image_size=args.image_size,
        n_train=args.n_train,
        n_audit=args.n_audit,
        seed=31,
    )
    paths = ensure_dataset(spec, args.synthetic, echo=print)
    demo = DemoModel("throughput", "throughput benchmark", spec)
    weights = ensure_model(
        demo, args.synthetic, paths["train"], echo=print, epochs=args.epochs, arch=args.model
    )
    if not args.audit_images:
        return weights, paths["audit"]
    # more audit images from the same distribution (another seed), for the same model
    more = dataclasses.replace(spec, n_train=4, n_audit=args.audit_images, seed=32)
    extra = ensure_dataset(more, args.synthetic / f"audit-{args.audit_images}", echo=print)
    return weights, extra["audit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--weights")
    parser.add_argument("--data")
    parser.add_argument("--synthetic", type=Path, help="Generate data and train a model here.")
    parser.add_argument("--n-audit", type=int, default=500)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument(
        "--audit-images",
        type=int,
        default=0,
        help="Audit this many images of the same distribution instead of the "
        "--n-audit the model's data set holds (generated once, cached).",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.synthetic:
        args.weights, args.data = synthetic(args)
    if not args.data:
        parser.error("give --data (and --weights), or --synthetic DIR")
    loaded = load_model(args.model, args.weights)
    net = loaded.model.to(device).eval()
    info = read_dataset(args.data)
    dataset = AuditDataset(info.records, AuditTransform(args.image_size))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=0)
    config = AuditConfig(image_size=args.image_size, batch_size=args.batch_size,
                         device=args.device)  # fmt: skip
    ratios, forwards, phases = [], [], {}
    for r in range(args.rounds):
        bare = bare_loop(net, loader, device)
        forwards.append(forward_loop(net, loader, device) / bare)
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            audit_to_dir(loaded, data=args.data, out=out, config=config, pdf=False)
            full = time.perf_counter() - started
            phases = json.loads((Path(out) / "run.json").read_text())["timings"]
            summary = json.loads((Path(out) / "summary.json").read_text())
            classes = summary["classes"]
            intervened = {c["name"]: (c.get("behaviour") or {}).get("intervened") for c in classes}
            print(f"  verdict {summary['verdict']}; statuses "
                  f"{ {c['name']: c['status'] for c in classes} }; images per class with "
                  f"interventions {intervened}", flush=True)  # fmt: skip
        ratios.append(full / bare)
        print(f"round {r + 1}: bare {bare:.1f} s, audit {full:.1f} s, ratio {full / bare:.2f}",
              flush=True)  # fmt: skip
    print(f"median ratio over {args.rounds} rounds: {statistics.median(ratios):.2f}")
    print(f"a no-grad forward costs {statistics.median(forwards):.2f} of the bare pass: the "
          "audit's floor is 1 (the attributed pass) + 3 x that (its three intervention "
          "forwards) + the broken swaps' attributed passes")  # fmt: skip
    total = phases.get("total_s", 0.0) + phases.get("report_s", 0.0)
    for name, seconds in sorted(phases.items(), key=lambda kv: -kv[1]):
        if name != "total_s":
            print(f"  {name:<18} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
