"""Models whose shortcut is known by construction, for tests that must see a flag."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from auditor.data import AuditDataset, read_dataset
from auditor.data.transforms import AuditTransform


class ColourMatch(nn.Module):
    """How close each pixel's colour is to each class's prototype: ``tau - ||x - p_k||^2``.

    inputs (Tensor[N, 3, H, W]) -> Tensor[N, K, H, W]
    """

    def __init__(self, classes: int, tau: float) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.zeros(classes, 3))
        self.tau = tau

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        distance = (inputs[:, None] - self.prototypes[None, :, :, None, None]).pow(2).sum(2)
        return self.tau - distance


class BackgroundReader(nn.Module):
    """Reads nothing but the background: class k scores the share of pixels whose colour is
    near the mean background colour of class k's images. Objects, whose colours match no
    background, add nothing, so every map of this model sits off the object."""

    def __init__(self, classes: int = 4, tau: float = 1.5) -> None:
        super().__init__()
        self.match = ColourMatch(classes, tau)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(classes, classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.match(inputs))).flatten(1))


def background_reader() -> BackgroundReader:
    """The factory the CLI calls (``--model planted:background_reader --weights ...``)."""
    return BackgroundReader()


class TupleReader(BackgroundReader):
    """The same model, returning ``(logits, features)`` as many research models do."""

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        features = self.pool(self.relu(self.match(inputs))).flatten(1)
        return self.fc(features), features


class DictReader(BackgroundReader):
    """The same model, returning ``{"features": ..., "scores": logits}``: the logits are not
    the first tensor, so an audit needs ``--output-key scores``."""

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        features = self.pool(self.relu(self.match(inputs))).flatten(1)
        return {"features": features, "scores": self.fc(features)}


def tuple_reader() -> TupleReader:
    return TupleReader()


def dict_reader() -> DictReader:
    return DictReader()


@torch.no_grad()
def fit_background_reader(annotations: Path, *, image_size: int) -> BackgroundReader:
    """Prototypes from the mean colour of each class's pixels outside its objects."""
    info = read_dataset(annotations)
    dataset = AuditDataset(info.records, AuditTransform(image_size))
    samples = [dataset[i] for i in range(len(dataset))]
    model = BackgroundReader(len(info.class_names))
    for k in range(len(info.class_names)):
        pixels = [s["inputs"].permute(1, 2, 0)[~s["masks"]] for s in samples if s["targets"] == k]
        model.match.prototypes[k] = torch.cat(pixels).mean(0)
    model.fc.weight.copy_(torch.eye(len(info.class_names)) * 10)
    model.fc.bias.zero_()
    return model.eval()


@torch.no_grad()
def fit_object_reader(annotations: Path, *, image_size: int) -> BackgroundReader:
    """The same network reading the objects instead: prototypes from the mean colour of
    each class's object pixels (right for the right reasons when objects have class colours)."""
    info = read_dataset(annotations)
    dataset = AuditDataset(info.records, AuditTransform(image_size))
    samples = [dataset[i] for i in range(len(dataset))]
    model = BackgroundReader(len(info.class_names))
    for k in range(len(info.class_names)):
        pixels = [s["inputs"].permute(1, 2, 0)[s["masks"]] for s in samples if s["targets"] == k]
        model.match.prototypes[k] = torch.cat(pixels).mean(0)
    model.fc.weight.copy_(torch.eye(len(info.class_names)) * 10)
    model.fc.bias.zero_()
    return model.eval()


def small_vit() -> nn.Module:
    """A torchvision VisionTransformer small enough for tests: 32 px, 8 px patches, 4 classes."""
    import torchvision

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=4,
    )  # fmt: skip
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return vit.eval()
