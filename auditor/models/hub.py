"""Models from the two hubs users fine-tune from, read from local files only:
``timm:NAME`` (a timm architecture and a weights file) and ``hf:DIR`` (a Hugging Face image
classifier folder). Both libraries are optional extras, imported only for these specs."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from auditor.errors import ModelError
from auditor.models.outputs import one_line
from auditor.models.weights import classes_in, load_into

TIMM = "timm:"
HF = "hf:"
GENERIC_LABEL = re.compile(r"LABEL_\d+")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _extra(module: str, extra: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(
            f"--model {spec} needs {module}, an optional extra: pip install 'auditor[{extra}]'."
        ) from None


def from_timm(
    spec: str, read: Callable[[], dict[str, torch.Tensor]], source: str | Path | None
) -> nn.Module:
    """The timm architecture ``timm:NAME`` with the number of classes and the weights of the
    checkpoint that ``read`` returns (once timm is known to be there); ``pretrained=False``:
    timm never fetches anything here."""
    timm = _extra("timm", "timm", spec)
    state = read()
    name = spec.removeprefix(TIMM)
    if not timm.is_model(name):
        raise ModelError(f"--model {spec}: timm has no architecture {name!r} (timm.list_models).")
    config = timm.models.get_pretrained_cfg(name)
    head = config.classifier if config is not None else None
    heads = [head] if isinstance(head, str) else list(head or [])
    num_classes = classes_in(state, [f"{h}.weight" for h in heads[:1]], spec, source or spec)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    except Exception as exc:  # timm raises many kinds for an architecture that cannot be built
        raise ModelError(f"--model {spec}: timm cannot build it ({one_line(exc)}).") from None
    load_into(model, state, source or spec)
    return model


def from_hf(spec: str) -> tuple[nn.Module, tuple[str, ...] | None, Path]:
    """The image classifier in the local folder ``hf:DIR``: (model, its output names from the
    config's ``id2label`` (None when they are generic ``LABEL_i``), its weights file)."""
    transformers = _extra("transformers", "hf", spec)
    folder = Path(spec.removeprefix(HF))
    if not (folder / "config.json").is_file():
        raise ModelError(f"--model {spec}: {folder} has no config.json (a Hugging Face folder).")
    weights = next((folder / f for f in HF_WEIGHTS if (folder / f).is_file()), None)
    if weights is None:
        raise ModelError(f"--model {spec}: {folder} has no {' or '.join(HF_WEIGHTS)}.")
    bars = transformers.utils.logging  # no "Loading weights" bar among the audit's lines
    shown = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            folder, local_files_only=True
        )
    except Exception as exc:  # transformers raises many kinds for a folder it cannot read
        detail = one_line(exc)
        raise ModelError(f"--model {spec}: transformers cannot load it ({detail}).") from None
    finally:
        if shown:
            bars.enable_progress_bar()
    id2label = getattr(model.config, "id2label", None) or {}
    labels = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
    generic = all(GENERIC_LABEL.fullmatch(label) for label in labels)
    return model, None if generic or not labels else labels, weights
