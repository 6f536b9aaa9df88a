"""Before the stream: the device, the checks that model and data agree, the target layer,
a probe of usable samples, which methods can run on this model, and which may be trusted."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from auditor.attribution.engine import CAM_METHODS, compute
from auditor.attribution.precision import autocast
from auditor.config import AuditConfig
from auditor.data.dataset import AuditDataset
from auditor.data.entries import Record
from auditor.data.read import DatasetInfo
from auditor.data.transforms import AuditTransform
from auditor.detect.faithfulness import faithfulness
from auditor.detect.sanity import randomization_check, resolution_check
from auditor.detect.views import active
from auditor.errors import AttributionError, ConfigError, DataError, ModelError
from auditor.models import LoadedModel, TargetLayer, is_scripted, resolve_target_layer


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but CUDA is not available.")
    return torch.device(device)


def check_classes(outputs: int, info: DatasetInfo, *, explicit_map: bool) -> None:
    """Model outputs and dataset classes must match one to one, unless a class map says
    which output each category is."""
    n = len(info.class_names)
    if outputs < n:
        raise DataError(f"{info.source}: {n} categories, but the model has {outputs} outputs.")
    if outputs > n and not explicit_map:
        raise DataError(
            f"{info.source}: the model has {outputs} outputs but the dataset has {n} categories; "
            "give --class-map to say which output each category is (auditor does not guess)."
        )


def check_labels(loaded: LoadedModel, info: DatasetInfo, *, explicit_map: bool) -> None:
    """A model that names its outputs (a Hugging Face config's ``id2label``) must name them
    as the dataset does, output by output, unless a class map says which output each
    category is. Case, spaces and underscores do not count."""
    if loaded.labels is None or explicit_map:
        return

    def plain(name: str) -> str:
        return " ".join(name.replace("_", " ").lower().split())

    pairs = zip(loaded.labels, info.class_names)
    differ = [(i, m, d) for i, (m, d) in enumerate(pairs) if plain(m) != plain(d)]
    if differ:
        shown = "; ".join(f"output {i} is {m!r} in the model, {d!r} in the data"
                          for i, m, d in differ[:3])  # fmt: skip
        more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
        raise DataError(
            f"{info.source}: the model's labels ({loaded.spec}, id2label) disagree with the "
            f"dataset's categories: {shown}{more}; give --class-map to say which output each "
            "category is."
        )


def target_layer(
    net: torch.nn.Module, config: AuditConfig, device: torch.device
) -> TargetLayer | None:
    if not any(m in CAM_METHODS for m in config.methods):
        return None
    if is_scripted(net):
        if config.target_layer is not None:
            raise ModelError(
                f"--target-layer {config.target_layer}: a TorchScript model's layers cannot be "
                "hooked; CAM methods need an eager model (module:factory or a state_dict)."
            )
        return None  # the CAM methods are left out with their reason by runnable_methods
    return resolve_target_layer(
        net, config.target_layer, image_size=config.image_size, device=device
    )


@dataclass(frozen=True)
class Probe:
    """A few usable samples spread evenly over the dataset, loaded once before the loop."""

    inputs: torch.Tensor  # Tensor[P, 3, S, S]
    masks: torch.Tensor  # Tensor[P, S, S] bool
    labels: torch.Tensor  # Tensor[P]
    positions: torch.Tensor  # Tensor[P], their dataset positions


def probe_samples(
    records: list[Record], transform: AuditTransform, *, size: int, device: torch.device
) -> Probe | None:
    """Up to ``size`` usable samples at evenly spaced dataset positions."""
    if size <= 0 or not records:
        return None
    dataset = AuditDataset(records, transform)
    picks = sorted({int(i) for i in torch.linspace(0, len(records) - 1, min(size, len(records)))})
    samples = [s for s in (dataset[i] for i in picks) if not s["skip"]]
    if not samples:
        return None
    return Probe(
        inputs=torch.stack([s["inputs"] for s in samples]).to(device),
        masks=torch.stack([s["masks"] for s in samples]).to(device),
        labels=torch.tensor([s["targets"] for s in samples]),
        positions=torch.tensor([s["index"] for s in samples]),
    )


@torch.no_grad()
def answered(net: torch.nn.Module, probe: Probe | None, config: AuditConfig) -> Probe | None:
    """The probe samples the model gives finite logits for: a probe image the model answers
    with NaN or infinity can neither check a method nor lend its background. Raises
    :class:`ModelError` when it answers none of them."""
    if probe is None:
        return None
    with autocast(probe.inputs.device, config.precision):
        finite = torch.cat([
            net(part).float().isfinite().all(1).cpu()
            for part in probe.inputs.split(config.batch_size)
        ])  # fmt: skip
    if bool(finite.all()):
        return probe
    if not bool(finite.any()):
        raise ModelError(
            f"The model returned NaN or infinite logits for every one of the {len(finite)} "
            "images probed across the dataset, so no image can be scored; check the model "
            "(and --precision: fp16 overflows where fp32 does not)."
        )
    keep = finite.nonzero().flatten()
    return Probe(
        inputs=probe.inputs[keep.to(probe.inputs.device)],
        masks=probe.masks[keep.to(probe.masks.device)],
        labels=probe.labels[keep],
        positions=probe.positions[keep],
    )


def settled(config: AuditConfig) -> AuditConfig:
    """``config`` with its primary method written in (:attr:`AuditConfig.primary`), so that
    every stage, and the stored run, reads one decision; its extra interventions must be
    known ones (:func:`auditor.detect.views.active`)."""
    active(config.extra_interventions)
    return dataclasses.replace(config, primary_method=config.primary)


def runnable_methods(
    net: torch.nn.Module, probe: Probe | None, layer: TargetLayer | None, config: AuditConfig
) -> tuple[AuditConfig, dict[str, str]]:
    """Try each method a batch computes (:attr:`AuditConfig.attributed`) on two probe
    samples; one that cannot run on this model (CAM without a GAP + linear head, guided
    backprop without ReLUs) is dropped and reported, so it ends as an error entry rather
    than ending the audit. A subgroup method that cannot run turns the subgroups off."""
    if probe is None:
        return settled(config), {}
    inputs, labels = probe.inputs[:2], probe.labels[:2].to(probe.inputs.device)
    try:  # one pass for all, the usual case; one per method only to tell which cannot run
        compute(net, inputs, labels, methods=config.attributed, target_layer=layer)
        return settled(config), {}
    except AttributionError:
        pass
    errors = {}
    for method in config.attributed:
        try:
            compute(net, inputs, labels, methods=(method,), target_layer=layer)
        except AttributionError as exc:
            errors[method] = str(exc)
    kept = tuple(m for m in config.methods if m not in errors)
    if not kept:
        details = "; ".join(f"{m}: {e}" for m, e in errors.items() if m in config.methods)
        raise AttributionError(f"No requested method can run on this model ({details}).")
    primary = config.primary_method if config.primary_method in kept else None
    config = dataclasses.replace(config, methods=kept, primary_method=primary)
    if config.subgroup_method in errors and config.subgroup_method not in config.methods:
        errors[config.subgroup_method] += " (so no subgroups were sought)"
        config = dataclasses.replace(config, subgroup_maps=0)
    return settled(config), errors


def check_cam_maps(maps: dict[str, torch.Tensor], layer: TargetLayer | None) -> None:
    """Stop when a CAM method's maps are zero on every probe image: its layer gives the
    audited classes nothing to weigh (a ViT layer after the last attention, where only the
    class token reaches the head), and every score would be undefined."""
    dead = [m for m in CAM_METHODS if m in maps and not bool((maps[m] != 0).any())]
    if dead and layer is not None:
        hint = (
            "leave --target-layer out to use the automatic one"
            if not layer.automatic
            else "give --target-layer"
        )
        raise AttributionError(
            f"{', '.join(dead)}: every map at layer {layer.name!r} is zero for the audited "
            f"classes, so no score could be computed; {hint} (the layer before the last "
            "attention block for a transformer, a [N, C, H, W] feature map for a CNN)."
        )


def method_faithfulness(
    net: torch.nn.Module,
    probe: Probe | None,
    layer: TargetLayer | None,
    config: AuditConfig,
    trust: dict[str, Any],
) -> dict[str, Any]:
    """``trust`` with each method's ROAD against a random map on the first
    ``faithfulness_samples`` probe images (:func:`auditor.detect.faithfulness.faithfulness`):
    a method no more faithful than a random map on this model joins ``untrusted``. Every
    method is measured, those untrusted already too, so the method card shows each."""
    n, methods = config.detect.faithfulness_samples, list(config.methods)
    if probe is None or n == 0 or not methods:
        return {**trust, "faithfulness": {}}
    inputs, labels = probe.inputs[:n], probe.labels[:n].to(probe.inputs.device)
    maps = compute(net, inputs, labels, methods=methods, target_layer=layer).maps
    found = faithfulness(net, inputs, labels, maps, seed=config.detect.seed,
                         alpha=config.detect.alpha)  # fmt: skip
    failed = {
        m: f"is no more faithful than a random map on this model (ROAD {f.road:+.3f} against "
        f"{f.random_road:+.3f} on {f.n} images; one-sided paired t, p = {f.p:.2g})"
        for m, f in found.items()
        if not f.faithful
    }  # fmt: skip
    return {
        **trust,
        "untrusted": {**failed, **trust["untrusted"]},  # an earlier reason is kept
        "faithfulness": {m: f.to_dict() for m, f in found.items()},
    }


def method_trust(
    net: torch.nn.Module, probe: Probe | None, layer: TargetLayer | None, config: AuditConfig
) -> dict[str, Any]:
    """Which methods may drive a flag: resolution and model-randomisation checks, and
    whether a guided or deconv rule reached every nonlinearity (else the method is partial)."""
    if probe is None:
        return {"untrusted": {}, "randomization_similarity": {}, "object_side_px": None,
                "partial": {}}  # fmt: skip
    n = config.detect.sanity_samples
    first = compute(  # the trained model's maps, for every check below
        net, probe.inputs[: max(n, 8)], probe.labels[: max(n, 8)].to(probe.inputs.device),
        methods=config.methods, target_layer=layer,
    )  # fmt: skip
    check_cam_maps(first.maps, layer)
    partial = first.partial
    side = float(probe.masks.flatten(1).sum(1).float().sqrt().median())
    untrusted = resolution_check(
        config.methods, cells=layer.cells if layer else None, image_size=config.image_size,
        object_side=side,
    )  # fmt: skip
    similarity, failed = randomization_check(
        net, probe.inputs[:n], probe.labels[:n].to(probe.inputs.device), config.methods,
        target_layer=layer,
        max_similarity=config.detect.sanity_max_similarity, seed=config.detect.seed,
        original={m: maps[:n] for m, maps in first.maps.items()},
    )  # fmt: skip
    return {
        "untrusted": {**failed, **untrusted, **partial},
        "randomization_similarity": similarity,
        "object_side_px": round(side, 1),
        "partial": partial,
    }
