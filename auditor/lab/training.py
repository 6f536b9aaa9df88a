"""Train a small torchvision classifier on a COCO-format dataset (used by the demo and the
benchmarks to make models whose shortcuts are known)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from auditor.data import AuditDataset, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.errors import DataError
from auditor.lab.models import build_model, load_backbone
from auditor.progress import ProgressBar


def load_tensors(
    annotations: str | Path, transform: AuditTransform
) -> tuple[torch.Tensor, torch.Tensor]:
    """All usable images and labels of a dataset: (inputs Tensor[N, 3, S, S], targets Tensor[N])."""
    dataset = AuditDataset(read_dataset(annotations).records, transform)
    samples = [dataset[i] for i in range(len(dataset))]
    usable = [s for s in samples if not s["skip"]]
    if not usable:
        raise DataError(f"{annotations}: no usable training image.")
    inputs = torch.stack([s["inputs"] for s in usable])  # type: ignore[misc]
    targets = torch.tensor([s["targets"] for s in usable])
    return inputs, targets


def train_classifier(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    arch: str = "resnet18",
    num_classes: int,
    epochs: int = 6,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: ProgressBar | None = None,
    backbone: Mapping[str, torch.Tensor] | None = None,
    recalibrate_norm: bool = False,
) -> nn.Module:
    """Adam + cross-entropy with horizontal flips; returns the model in eval mode. Seeded by
    ``seed`` alone: the global random state is the same afterwards as before. ``arch`` is a
    torchvision name or ``module:factory``; ``backbone``, a ``state_dict`` trained on another
    task, starts every layer but the fresh classifier head (fine-tuning). ``recalibrate_norm``
    re-estimates the batch-norm statistics on the training images after training: needed
    where torchvision sets a slow momentum (MobileNetV3: 0.01), whose running statistics
    still carry the untrained network's after a few hundred steps."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, num_classes)
        if backbone is not None:
            load_backbone(model, backbone)
        generator = torch.Generator().manual_seed(seed)
        _fit(model, inputs, targets, generator, epochs=epochs, batch_size=batch_size, lr=lr,
             progress=progress)  # fmt: skip
        if recalibrate_norm:
            _recalibrate_norm(model, inputs, batch_size=batch_size)
    return model.eval()


@torch.no_grad()
def _recalibrate_norm(model: nn.Module, inputs: torch.Tensor, *, batch_size: int) -> None:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over all batches
    model.train()
    for x in inputs.split(batch_size):
        model(x)


def _fit(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    progress: ProgressBar | None,
) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * -(-len(inputs) // batch_size)
    )
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for batch in order.split(batch_size):
            x = inputs[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress is not None:
                progress.update(len(batch))


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 128) -> torch.Tensor:
    """Predicted class per sample. inputs (Tensor[N, 3, H, W]) -> Tensor[N]"""
    model.eval()
    if len(inputs) == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([model(x).argmax(1) for x in inputs.split(batch_size)])


def accuracy_by_class(predictions: torch.Tensor, targets: torch.Tensor, k: int) -> list[float]:
    return [float((predictions[targets == c] == c).float().mean()) for c in range(k)]


def stack_images(images: Sequence[object], transform: AuditTransform) -> torch.Tensor:
    """PIL images -> normalised Tensor[N, 3, S, S] (for interventions rendered in memory)."""
    import numpy as np

    dummy = np.ones((1, 1), dtype=bool)
    return torch.stack(
        [
            transform(img.resize((transform.image_size,) * 2), dummy)[0]  # type: ignore[attr-defined]
            for img in images
        ]
    )
