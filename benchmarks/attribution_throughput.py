"""Attribution throughput: auditor's fused engine against a bare pass, Captum and grad-cam.

    python benchmarks/attribution_throughput.py --model resnet18 --image-size 224 \
        --batch-size 16 --device cpu --repeats 3 [--threads 1] [--bf16 --channels-last]

Prints images/s for each row, and its ratio to the bare forward + input-backward, all on the
same model (random weights), batch and device. The "automatic layer" row calls
``attribute()`` without ``target_layer``, as a loop over batches does: the layer is resolved
on the first call for the model and input size and reused by the later ones. Captum and
pytorch-grad-cam are test-only dependencies; they must be installed to run this.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch
import torchvision
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from auditor.attribution import attribute
from auditor.models import resolve_target_layer

SEED_SIX = ("saliency", "deconvnet", "guided_backprop", "cam", "gradcam", "guided_gradcam")
CAPTUM_FIVE = ("saliency", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)"
    )
    return parser.parse_args()


def bare(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """One forward and one input-only backward: the floor for any gradient method."""
    leaf = inputs.detach().requires_grad_(True)
    logits = model(leaf)
    torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), leaf)


def captum_five(model: nn.Module, layer: nn.Module) -> Callable[..., None]:
    size = None

    def run(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        nonlocal size
        size = inputs.shape[-2:]
        Saliency(model).attribute(inputs, target=targets)
        Deconvolution(model).attribute(inputs, target=targets)
        GuidedBackprop(model).attribute(inputs, target=targets)
        cam = LayerGradCam(model, layer).attribute(inputs, target=targets, relu_attributions=True)
        LayerAttribution.interpolate(cam, tuple(size), "bilinear")
        GuidedGradCam(model, layer).attribute(inputs, target=targets, interpolate_mode="bilinear")

    return run


def grad_cam_library(model: nn.Module, layer: nn.Module) -> Callable[..., None]:
    def run(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        with GradCAM(model=model, target_layers=[layer]) as extractor:
            extractor(inputs, [ClassifierOutputTarget(int(t)) for t in targets])

    return run


def ours(
    model: nn.Module, layer: nn.Module | None, methods: tuple[str, ...]
) -> Callable[..., None]:
    """auditor's maps; ``layer`` None: the automatic layer, as a user's loop over batches
    without ``target_layer`` gets it (resolved on the first call, reused after)."""

    def run(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        attribute(model, inputs, targets, methods=methods, target_layer=layer)

    return run


def images_per_second(
    rows: dict[str, Callable[[torch.Tensor, torch.Tensor], None]],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    repeats: int,
    bf16: bool,
) -> dict[str, float]:
    """Best of ``repeats`` timed calls per row, after one warm-up call each. Rows take turns
    within each repeat, so that a slow spell of the machine does not fall on one row only."""
    autocast = torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16)
    best = dict.fromkeys(rows, float("inf"))
    for i in range(repeats + 1):
        for name, run in rows.items():
            _sync(inputs.device)
            start = time.perf_counter()
            with autocast:
                run(inputs, targets)
            _sync(inputs.device)
            if i:
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: inputs.shape[0] / seconds for name, seconds in best.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    warnings.filterwarnings("ignore", module="captum")  # it warns on every guided call
    warnings.filterwarnings("ignore", message="Setting backward hooks")
    args = parse()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval().to(device)
    layer = resolve_target_layer(model, None, image_size=args.image_size, device=device)
    inputs = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        model, inputs = (
            model.to(memory_format=torch.channels_last),
            inputs.contiguous(memory_format=torch.channels_last),
        )
    targets = torch.randint(0, 1000, (args.batch_size,), device=device)
    rows: dict[str, Callable[..., None]] = {
        "bare forward + input backward": lambda x, t: bare(model, x, t),
        "auditor saliency + gradcam": ours(model, layer.module, ("saliency", "gradcam")),
        "  ... automatic layer": ours(model, None, ("saliency", "gradcam")),
        "auditor six seed methods": ours(model, layer.module, SEED_SIX),
        "auditor five (Captum's set)": ours(model, layer.module, CAPTUM_FIVE),
        "captum five calls": captum_five(model, layer.module),
        "pytorch-grad-cam GradCAM": grad_cam_library(model, layer.module),
    }
    print(
        f"{args.model} {args.image_size}px batch {args.batch_size} on {device} "
        f"(layer {layer.name}, {layer.cells[0]}x{layer.cells[1]} cells, bf16={args.bf16}, "
        f"channels_last={args.channels_last}, {torch.get_num_threads()} CPU threads, "
        f"best of {args.repeats})"
    )
    speed = images_per_second(rows, inputs, targets, repeats=args.repeats, bf16=args.bf16)
    floor = speed["bare forward + input backward"]
    print(f"{'row':34} {'images/s':>10} {'x bare':>8}")
    for name, value in speed.items():
        print(f"{name:34} {value:10.2f} {value / floor:8.2f}")
    fused, captum = speed["auditor five (Captum's set)"], speed["captum five calls"]
    print(f"auditor five / captum five: {fused / captum:.2f}x")
    print(f"auditor six / captum five: {speed['auditor six seed methods'] / captum:.2f}x")
    print(f"auditor saliency + gradcam / bare: {speed['auditor saliency + gradcam'] / floor:.2f}x")
    automatic = speed["  ... automatic layer"] / floor
    print(f"auditor saliency + gradcam, no target_layer given / bare: {automatic:.2f}x")


if __name__ == "__main__":
    main()
