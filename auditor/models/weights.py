"""Weights files: their digest, reading a ``state_dict`` (or safetensors) safely, and
loading one into a model with a one-line error when it does not fit."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from auditor.errors import ModelError


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``state_dict``, also one wrapped under ``state_dict``/``model`` or saved from DDP."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found.")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle or zip
        kind = type(exc).__name__
        hint = _pickled_model_hint(exc)
        raise ModelError(f"{path}: not a readable PyTorch checkpoint ({kind}){hint}.") from None
    for key in ("state_dict", "model"):
        if isinstance(raw, Mapping) and isinstance(raw.get(key), Mapping):
            raw = raw[key]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelError(f"{path}: expected a state_dict of tensors, got {type(raw).__name__}.")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def classes_in(
    state: Mapping[str, torch.Tensor], head: list[str], name: str, source: str | Path
) -> int:
    """The number of classes of a checkpoint: the rows of its classifier weight ``head``."""
    if not head or head[0] not in state:
        raise ModelError(f"{source}: no classifier weights for {name} (expected key {head}).")
    return int(state[head[0]].shape[0])


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise ModelError(f"{source}: weights do not fit the model: {detail[:300]}") from None


def _pickled_model_hint(exc: Exception) -> str:
    """A hint when a file holds a whole pickled model (``torch.save(model)``): loading it would
    run arbitrary code, so auditor reads only state_dicts and TorchScript."""
    text = str(exc)
    if "Unsupported global" in text or "weights_only" in text.lower():
        return (
            "; it holds pickled Python objects, such as a whole model saved with "
            "torch.save(model): save model.state_dict() instead, or a TorchScript file"
        )
    return ""
