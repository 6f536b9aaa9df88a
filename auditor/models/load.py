"""Load the classifier under audit.

A model spec is one of:
- a torchvision architecture name (``resnet18``), with ``weights`` a ``state_dict`` or
  safetensors file; the number of classes is read from the checkpoint's classifier;
- ``timm:NAME``, a timm architecture, with ``weights`` as for torchvision names (the optional
  extra ``auditor[timm]``);
- ``hf:DIR``, a local Hugging Face image classifier folder (``config.json`` and its weights),
  read without any network access (the optional extra ``auditor[hf]``);
- a TorchScript file (``model.pt`` saved with ``torch.jit.save``);
- ``package.module:factory``, an explicit opt-in to run user code that returns an
  ``nn.Module``; ``weights``, when given, is loaded into it.

Whatever the model returns, its calls return the logits (:mod:`auditor.models.outputs`).
"""

from __future__ import annotations

import importlib
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from auditor.errors import ModelError
from auditor.models.hub import HF, TIMM, from_hf, from_timm
from auditor.models.outputs import one_line, select_logits
from auditor.models.weights import classes_in, file_sha256, load_into, read_state_dict


@dataclass(frozen=True)
class LoadedModel:
    """The model in eval mode, the spec it came from and the sha256 of its weights file
    (None when the weights came from code). Its number of outputs is measured by
    :func:`count_outputs`, not guessed from its layers."""

    model: nn.Module
    spec: str
    sha256: str | None
    labels: tuple[str, ...] | None = None  # output names the model declares (hf:DIR)


def load_model(
    spec: str, weights: str | Path | None = None, *, output_key: str | None = None
) -> LoadedModel:
    """Build the model named by ``spec`` in eval mode on the CPU, its calls returning the
    logits (``output_key``: see :func:`auditor.models.outputs.logits_of`)."""
    labels = None
    if spec.startswith(HF):
        if weights is not None:
            raise ModelError(f"--weights {weights}: {spec} reads its weights from its folder.")
        model, labels, weights = from_hf(spec)
    elif spec.startswith(TIMM):
        model = from_timm(spec, lambda: _needed(spec, weights), weights)
    elif ":" in spec and not Path(spec).exists():
        model = _from_factory(spec)
        if weights is not None:
            load_into(model, read_state_dict(weights), weights)
    elif Path(spec).is_file():
        if weights is not None:
            raise ModelError(
                f"--weights {weights}: {spec} is a model file and carries its own weights; "
                "--weights goes with a torchvision name or module:factory."
            )
        model = _from_torchscript(Path(spec))
        weights = spec
    else:
        model = _from_torchvision(spec, _needed(spec, weights), weights)  # type: ignore[arg-type]
    select_logits(model.eval(), output_key)
    digest = file_sha256(weights) if weights is not None else None
    return LoadedModel(model=model, spec=spec, sha256=digest, labels=labels)


def _needed(spec: str, weights: str | Path | None) -> dict[str, torch.Tensor]:
    if weights is None:
        raise ModelError(
            f"--model {spec} needs --weights: a state_dict or safetensors file "
            "(auditor never downloads weights)."
        )
    return read_state_dict(weights)


def _from_torchvision(name: str, state: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ModelError(
            f"--model {name!r}: not a torchvision classifier, timm:NAME, hf:DIR, a TorchScript "
            "file, or module:factory."
        )
    template = torchvision.models.get_model(name, weights=None).state_dict()
    head = [k for k, v in template.items() if k.endswith(".weight") and v.shape[:1] == (1000,)]
    num_classes = classes_in(state, head[-1:], name, source)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    load_into(model, state, source)
    return model


def _from_torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, yet a documented model type
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        hint = (
            "; a whole model saved with torch.save(model) cannot be loaded safely: save "
            "model.state_dict() and pass it as --weights with a torchvision name or module:factory"
            if zipfile.is_zipfile(path)
            else ""
        )
        raise ModelError(f"{path}: not a TorchScript model ({type(exc).__name__}){hint}.") from None


def _from_factory(spec: str) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except BaseException as exc:  # importing user code may raise anything, even SystemExit
        raise ModelError(f"--model {spec}: cannot import ({one_line(exc)}).") from None
    if not callable(factory):
        raise ModelError(f"--model {spec}: {attr} is a {type(factory).__name__}, not callable.")
    try:
        model = factory()
    except BaseException as exc:  # the factory is user code: SystemExit must not end the audit
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ModelError(f"--model {spec}: the factory raised {one_line(exc)}.") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec}: factory returned {type(model).__name__}, not nn.Module.")
    return model
