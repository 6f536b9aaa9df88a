"""Classifiers the lab trains: torchvision architectures by name, and factories given as
``module:factory`` (as ``auditor audit --model`` takes them), such as :func:`small_vit`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import torch
import torchvision
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt
from torchvision.models.vision_transformer import VisionTransformer

from auditor.errors import ConfigError


def small_vit(num_classes: int = 4, image_size: int = 64) -> nn.Module:
    """A 4-layer ViT (hidden 128, 4 heads, 8-pixel patches): small enough to train on a CPU.
    With no argument it fits the ladder's 4-class 64-pixel rungs, as ``--model
    auditor.lab.models:small_vit`` builds it."""
    return VisionTransformer(
        image_size=image_size,
        patch_size=8,
        num_layers=4,
        num_heads=4,
        hidden_dim=128,
        mlp_dim=256,
        num_classes=num_classes,
    )


def small_convnext(num_classes: int = 4) -> nn.Module:
    """A ConvNeXt with ConvNeXt-Tiny's design at a quarter of its widths and one block per
    stage (about 0.5M parameters instead of 28M)."""
    stages = [CNBlockConfig(24, 48, 1), CNBlockConfig(48, 96, 1), CNBlockConfig(96, 192, 1),
              CNBlockConfig(192, None, 1)]  # fmt: skip
    return ConvNeXt(stages, stochastic_depth_prob=0.0, num_classes=num_classes)


def build_model(arch: str, num_classes: int) -> nn.Module:
    """A fresh, untrained ``arch``: a torchvision name or ``module:factory`` (called with
    ``num_classes``)."""
    if ":" not in arch:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    module_name, _, attr = arch.partition(":")
    factory = getattr(importlib.import_module(module_name), attr, None)
    if not callable(factory):
        raise ConfigError(f"Expected a callable at {arch}, got {type(factory).__name__}.")
    model = factory(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"Expected {arch} to return an nn.Module, got {type(model).__name__}.")
    return model


def load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy into ``model`` every tensor of ``state`` (a model trained on another task) whose
    name and shape fit, except the classifier head (the last ``nn.Linear``), which stays
    fresh as when one fine-tunes an ImageNet model. Returns the names left as they were."""
    own = model.state_dict()
    head = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1:]
    fitting = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and k.rpartition(".")[0] not in head
    }
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def file_name(arch: str) -> str:
    """``arch`` as a file stem: ``auditor.lab.models:small_vit`` -> ``small_vit``."""
    return arch.rpartition(":")[2]
