"""Shared fixtures: tiny models and datasets built in the test, nothing downloaded."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from auditor.lab.synthetic import SyntheticSpec, write_dataset


class TinyCNN(nn.Module):
    """conv-relu-conv-relu-GAP-linear: small enough for float64 references."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="session")
def coco_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class planted-shortcut COCO dataset of 48 audit images at 32 px."""
    root = tmp_path_factory.mktemp("coco")
    spec = SyntheticSpec(
        background_strength=(0.9, 0.0, 0.0, 0.0), image_size=32, n_train=4, n_audit=48, seed=5
    )
    return write_dataset(spec, root)["audit"]


@pytest.fixture(scope="session")
def fitted_tiny_cnn(coco_dataset: Path) -> TinyCNN:
    """A tiny CNN fitted to ``coco_dataset``'s images themselves: it reads backgrounds as
    well as shapes, so swapping the background breaks some of its right answers. Shared:
    deep-copy it before changing it."""
    from auditor.data.transforms import AuditTransform
    from auditor.lab.training import load_tensors

    torch.manual_seed(3)
    inputs, targets = load_tensors(coco_dataset, AuditTransform(32))
    net = TinyCNN(classes=4)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(60):
        optimiser.zero_grad()
        nn.functional.cross_entropy(net(inputs), targets).backward()
        optimiser.step()
    return net.eval()


@pytest.fixture(scope="session")
def planted_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 images at 32 px, 25 per class, each class always on its own background."""
    root = tmp_path_factory.mktemp("planted")
    spec = SyntheticSpec(
        background_strength=(1.0,) * 4, image_size=32, n_train=4, n_audit=100, seed=7
    )
    return write_dataset(spec, root)["audit"]


@pytest.fixture(scope="session")
def planted_weights(planted_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state_dict of a model that reads only the background (``planted.py``): every class
    must be flagged. Load with ``--model planted:background_reader --weights ...``."""
    from planted import fit_background_reader

    path = tmp_path_factory.mktemp("planted-weights") / "background_reader.pt"
    torch.save(fit_background_reader(planted_dataset, image_size=32).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 state_dict with 4 outputs and random weights."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One CPU thread for modules of many tiny-model tests: they gain nothing from more, and
    on a shared CPU OpenMP threads wait on each other. Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with _single_thread():
        yield


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_worker() -> Iterator[None]:
    """Under pytest-xdist (``make test`` runs a worker per core) each worker computes on one
    thread: two workers of two threads each on two cores wait on each other."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    with _single_thread():
        yield


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """torch on one CPU thread, the previous count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _history_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every audit records its run in a history; the tests' runs go to a temporary one,
    never to the checkout's reports/history.sqlite."""
    saved = os.environ.get("AUDITOR_HISTORY")
    os.environ["AUDITOR_HISTORY"] = str(tmp_path_factory.mktemp("history") / "history.sqlite")
    yield
    if saved is None:
        os.environ.pop("AUDITOR_HISTORY", None)
    else:
        os.environ["AUDITOR_HISTORY"] = saved
