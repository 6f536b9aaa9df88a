"""What a model returns: the logits rule for models whose forward returns more than a
tensor, the number of outputs, and the penultimate features.

The rule (:func:`logits_of`): a tensor is the logits. Of a tuple, list, dict or Hugging Face
``ModelOutput``, the ``logits`` field when there is one, else the first tensor; ``key`` (the
``--output-key`` setting) names another field, or an index of a tuple. A dict with several
tensors and none named ``logits`` is refused without ``key``: the order of named fields says
nothing about which one is the logits, and a wrong guess would audit the wrong numbers.
:func:`select_logits` applies the rule once, as a forward hook on the model itself, so every
later call (the attribution pass, the interventions, the sanity checks) sees a tensor, and
the model's module names stay the user's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from auditor.errors import ModelError


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and first 200 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def is_scripted(model: nn.Module) -> bool:
    """A TorchScript model (scripted or traced): its forward runs outside Python, so it can
    neither be hooked nor have its ReLUs routed."""
    return isinstance(model, torch.jit.ScriptModule)


def logits_of(output: object, key: str | None = None) -> torch.Tensor:
    """The logits in a model's output, by the rule in this module's docstring."""
    if isinstance(output, torch.Tensor):
        return output
    if key is not None:
        return _field(output, key)
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits  # type: ignore[attr-defined]
    if isinstance(output, Mapping):
        named = [str(k) for k, v in output.items() if isinstance(v, torch.Tensor)]
        if len(named) > 1:  # named fields, none of them 'logits': which one is not ours to guess
            raise ModelError(
                f"The model returns {type(output).__name__} with tensors under "
                f"{', '.join(named)} and none named 'logits'; name the logits with --output-key."
            )
        if named:
            return output[next(k for k in output if str(k) == named[0])]
    elif isinstance(output, list | tuple):
        found = next((v for v in output if isinstance(v, torch.Tensor)), None)
        if found is not None:
            return found
    raise ModelError(
        f"The model returns {type(output).__name__} with no tensor in it; expected logits "
        "Tensor[N, K], or a tuple, dict or ModelOutput holding them."
    )


def _field(output: object, key: str) -> torch.Tensor:
    """``output[key]``, ``output.key``, or for a tuple or list ``output[int(key)]``."""
    found: object = None
    if isinstance(output, Mapping):
        found = output.get(key)
        fields = [str(k) for k in output]
    elif isinstance(output, Sequence) and key.lstrip("-").isdigit():
        index = int(key)
        found = output[index] if -len(output) <= index < len(output) else None
        fields = [str(i) for i in range(len(output))]
    else:
        found = getattr(output, key, None)
        fields = list(getattr(output, "_fields", ()))
    if not isinstance(found, torch.Tensor):
        raise ModelError(
            f"--output-key {key}: the model's {type(output).__name__} output has no tensor "
            f"under {key!r}; it has: {', '.join(fields) or 'no named fields'}."
        )
    return found


class _LogitsHook:
    """A forward hook that replaces the model's output with its logits."""

    def __init__(self, key: str | None) -> None:
        self.key = key

    def __call__(self, _module: nn.Module, _inputs: object, output: object) -> torch.Tensor:
        return logits_of(output, self.key)


def select_logits(model: nn.Module, key: str | None = None) -> nn.Module:
    """``model``, whose calls return the logits by the rule (see the module docstring); an
    earlier selection on the same model is replaced. A TorchScript model cannot be hooked
    and is returned as it is: it must return a tensor."""
    if is_scripted(model):
        return model
    hooks = model._forward_hooks  # the hook dict torch keeps; ours are told by their type
    for handle_id in [i for i, hook in hooks.items() if isinstance(hook, _LogitsHook)]:
        del hooks[handle_id]
    model.register_forward_hook(_LogitsHook(key))
    return model


def count_outputs(model: nn.Module, *, image_size: int, device: torch.device) -> int:
    """The number of logits the model returns for one image, measured by a forward pass."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        with torch.no_grad():
            logits = model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"The model fails on a 1x3x{image_size}x{image_size} input: {one_line(exc)}"
        ) from None
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        scripted = " (a TorchScript model must return them itself)" if is_scripted(model) else ""
        raise ModelError(
            f"Expected the model to return logits Tensor[1, K]{scripted}, got {shape}."
        )
    return int(logits.shape[1])


class LastLinear(TorchFunctionMode):
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
    watcher = LastLinear()
    with watcher:
        model(inputs)
    if watcher.features is None or is_scripted(model):
        raise ModelError(
            "The model has no final linear layer (nn.Linear / F.linear) whose input could "
            "serve as its penultimate features; probe without --model."
        )
    return watcher.features.detach().flatten(1).float().cpu()
