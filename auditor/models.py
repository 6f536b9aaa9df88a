"""Load the classifier under audit and find the layer a CAM looks at.

A model spec is one of:
- a torchvision architecture name (``resnet18``), with ``weights`` a ``state_dict`` file;
  the number of classes is read from the checkpoint's classifier;
- a TorchScript file (``model.pt`` saved with ``torch.jit.save``);
- ``package.module:factory``, an explicit opt-in to run user code that returns an
  ``nn.Module``; ``weights``, when given, is loaded into it.
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from auditor.errors import ModelError

MIN_CAM_CELLS = 7


@dataclass(frozen=True)
class LoadedModel:
    """The model in eval mode, the spec it came from and the sha256 of its weights file
    (None when the weights came from code). Its number of outputs is measured by
    :func:`count_outputs`, not guessed from its layers."""

    model: nn.Module
    spec: str
    sha256: str | None


def load_model(spec: str, weights: str | Path | None = None) -> LoadedModel:
    """Build the model named by ``spec`` in eval mode on the CPU."""
    if ":" in spec and not Path(spec).exists():
        model = _from_factory(spec)
        if weights is not None:
            _load_into(model, read_state_dict(weights), weights)
    elif Path(spec).is_file():
        if weights is not None:
            raise ModelError(
                f"--weights {weights}: {spec} is a model file and carries its own weights; "
                "--weights goes with a torchvision name or module:factory."
            )
        model = _from_torchscript(Path(spec))
        weights = spec
    else:
        if weights is None:
            raise ModelError(
                f"--model {spec} needs --weights: a state_dict file "
                "(auditor never downloads weights)."
            )
        model = _from_torchvision(spec, read_state_dict(weights), weights)
    model.eval()
    digest = file_sha256(weights) if weights is not None else None
    return LoadedModel(model=model, spec=spec, sha256=digest)


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


def _from_torchvision(name: str, state: dict[str, torch.Tensor], source: str | Path) -> nn.Module:
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ModelError(
            f"--model {name!r}: not a torchvision classifier, a TorchScript file, "
            "or module:factory."
        )
    template = torchvision.models.get_model(name, weights=None).state_dict()
    head = [k for k, v in template.items() if k.endswith(".weight") and v.shape[:1] == (1000,)]
    if not head or head[-1] not in state:
        raise ModelError(f"{source}: no classifier weights for {name} (expected key {head[-1:]}).")
    num_classes = int(state[head[-1]].shape[0])
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    _load_into(model, state, source)
    return model


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
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
        raise ModelError(f"--model {spec}: cannot import ({_one_line(exc)}).") from None
    if not callable(factory):
        raise ModelError(f"--model {spec}: {attr} is a {type(factory).__name__}, not callable.")
    try:
        model = factory()
    except BaseException as exc:  # the factory is user code: SystemExit must not end the audit
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ModelError(f"--model {spec}: the factory raised {_one_line(exc)}.") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec}: factory returned {type(model).__name__}, not nn.Module.")
    return model


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def is_scripted(model: nn.Module) -> bool:
    """A TorchScript model (scripted or traced): its forward runs outside Python, so it can
    neither be hooked nor have its ReLUs routed."""
    return isinstance(model, torch.jit.ScriptModule)


def count_outputs(model: nn.Module, *, image_size: int, device: torch.device) -> int:
    """The number of logits the model returns for one image, measured by a forward pass."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad():
            logits = model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    except Exception as exc:
        raise ModelError(
            f"The model fails on a 1x3x{image_size}x{image_size} input: {_one_line(exc)}"
        ) from None
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"Expected the model to return logits Tensor[1, K], got {shape}.")
    return int(logits.shape[1])


@dataclass(frozen=True)
class TargetLayer:
    name: str
    module: nn.Module
    cells: tuple[int, int]
    automatic: bool


def resolve_target_layer(
    model: nn.Module, name: str | None, *, image_size: int, device: torch.device | None = None
) -> TargetLayer:
    """The layer whose activations a CAM weighs.

    With ``name``, the module of that dotted name. Otherwise the last spatial feature map
    before global pooling; when that map is coarser than 7x7 cells (resnet18 at 64 px ends at
    2x2), the deepest layer that still has at least 7x7 cells, since a CAM cannot localise
    below its layer's resolution. For a torchvision vision transformer, the token grid that
    enters the last encoder block (its ``ln_1``): the CAM drops the class token. Later token
    outputs are no use, as only the class token reaches the head after the last attention.
    """
    shapes, tokens, channels_last = _spatial_output_shapes(
        model, image_size=image_size, device=device
    )
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            raise ModelError(f"--target-layer {name!r}: no such module in the model.")
        if name in channels_last:
            raise ModelError(
                f"--target-layer {name!r}: its output is channels-last [N, H, W, C] (found by "
                "perturbing the input), and a CAM reads [N, C, H, W]; layers that work: "
                f"{', '.join(_working(shapes, tokens, channels_last)) or 'none found'}."
            )
        cells = shapes.get(name) or tokens.get(name)
        if cells is None:
            raise ModelError(
                f"--target-layer {name!r}: its output is not a spatial feature map "
                "(Tensor[N, C, H, W]) or a square token grid (Tensor[N, 1 + H*W, C])."
            )
        return TargetLayer(name, modules[name], cells, automatic=False)
    if isinstance(model, torchvision.models.VisionTransformer):
        last = f"encoder.layers.encoder_layer_{len(model.encoder.layers) - 1}.ln_1"
        return TargetLayer(last, modules[last], tokens[last], automatic=True)
    spatial = [(n, s) for n, s in shapes.items() if s[0] * s[1] > 1 and n not in channels_last]
    if not spatial:
        raise ModelError("No spatial feature map found for a CAM; give --target-layer.")
    fine = [(n, s) for n, s in spatial if min(s) >= MIN_CAM_CELLS]
    chosen, cells = (fine or spatial)[-1]
    return TargetLayer(chosen, modules[chosen], cells, automatic=True)


def _working(
    shapes: dict[str, tuple[int, int]], tokens: dict[str, tuple[int, int]], channels_last: set[str]
) -> list[str]:
    """The deepest few layers a CAM can read, deepest first, for an error message."""
    fine = [n for n, s in shapes.items() if n not in channels_last and min(s) >= MIN_CAM_CELLS]
    return [*fine[::-1][:3], *list(tokens)[::-1][:2]]


def _spatial_output_shapes(
    model: nn.Module, *, image_size: int, device: torch.device | None
) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]], set[str]]:
    """Module name -> (H, W) of its 4-D output read as [N, C, H, W], in the order the modules
    finish; module name -> (h, w) grid of its transformer tokens Tensor[N, 1 + h*w, C], class
    token first; and the 4-D outputs that are channels-last, [N, H, W, C] (swin's stages).

    The layout is established, not guessed from the shape: the top-left quarter of the
    input is perturbed, and a layer is channels-last when the change in its output gathers
    in the top-left of dims 1 and 2 clearly more than in the top-left of dims 2 and 3."""
    outputs: dict[str, list[torch.Tensor]] = {}
    order: list[str] = []

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() in (3, 4):
                outputs.setdefault(name, []).append(output.detach())
                if name in order:
                    order.remove(name)  # a reused module counts at its last use
                order.append(name)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = device or (param.device if param is not None else torch.device("cpu"))
        base = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        moved = base.clone()
        quarter = max(1, image_size // 4)
        moved[:, :, :quarter, :quarter] += 2.0
        with torch.no_grad():
            model(base.to(device))
            first = {n: v[-1] for n, v in outputs.items()}
            outputs.clear()
            model(moved.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    shapes: dict[str, tuple[int, int]] = {}
    tokens: dict[str, tuple[int, int]] = {}
    channels_last = set()
    for name in order:
        out = first.get(name)
        if out is None or name not in outputs or outputs[name][-1].shape != out.shape:
            continue
        if out.dim() == 4:
            shapes[name] = (int(out.shape[2]), int(out.shape[3]))
            if _channels_last((outputs[name][-1] - out).abs()):
                channels_last.add(name)
        else:
            side = round((out.shape[1] - 1) ** 0.5)
            if side > 0 and side * side == out.shape[1] - 1:
                tokens[name] = (side, side)
    return shapes, tokens, channels_last


def _channels_last(change: torch.Tensor, margin: float = 0.15) -> bool:
    """Whether the change Tensor[1, A, B, C] of a layer's output, after the input's top-left
    quarter moved, sits in the top-left of (A, B) clearly more than of (B, C). Where neither
    layout is clearly ahead (a layer that mixes every position, such as attention over one
    window), the square input decides: a square (A, B) beside a non-square (B, C)."""

    def top_left(m: torch.Tensor) -> float:
        total = float(m.sum())
        h, w = (m.shape[-2] + 1) // 2, (m.shape[-1] + 1) // 2
        return float(m[..., :h, :w].sum()) / total if total > 0 else 0.0

    last, first = top_left(change.sum(3)), top_left(change.sum(1))
    if abs(last - first) > margin:
        return last > first
    _, a, b, c = change.shape
    return a == b != c


class _LastLinear(TorchFunctionMode):
    """Records the input of the last ``F.linear`` call of a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.features: torch.Tensor | None = None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if func is torch.nn.functional.linear and args:
            self.features = args[0]
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def penultimate(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The model's penultimate features: the input of its last linear layer (the classifier
    head), Tensor[N, F] float32 on the CPU, for inputs Tensor[N, 3, S, S] as the model takes
    them. Raises :class:`ModelError` for a model without one (or a TorchScript model, whose
    calls cannot be watched)."""
    watcher = _LastLinear()
    with watcher:
        model(inputs)
    if watcher.features is None or is_scripted(model):
        raise ModelError(
            "The model has no final linear layer (nn.Linear / F.linear) whose input could "
            "serve as its penultimate features; probe without --model."
        )
    return watcher.features.detach().flatten(1).float().cpu()
