"""The streaming audit: batches -> maps -> per-sample rows + bounded exemplars -> results.

Maps never pile up: each batch's maps are scored, offered to the per-class exemplar sets,
and dropped. Only :func:`audit` knows every stage.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from auditor.accumulate import Keyed
from auditor.config import AuditConfig
from auditor.data.attributes import check_group_by
from auditor.data.dataset import AuditDataset
from auditor.data.entries import Record
from auditor.data.read import DatasetInfo, read_dataset
from auditor.data.transforms import AuditTransform
from auditor.detect.interventions import DonorPool, remove_object
from auditor.detect.maps import MapSample
from auditor.detect.rule import neutral_classes
from auditor.detect.views import active
from auditor.errors import DataError
from auditor.models import (
    LoadedModel,
    TargetLayer,
    count_outputs,
    file_sha256,
    load_model,
    select_logits,
)
from auditor.progress import progress_bar
from auditor.record import read_summary
from auditor.report.words import phrased
from auditor.run import AuditRun
from auditor.runner.batch import HalvingOnOOM, audit_batch, sample_columns
from auditor.runner.checkpoint import Checkpoint, Progress, Resume, Rows
from auditor.runner.distributed import (
    SINGLE,
    World,
    in_batch_order,
    merged_progress,
    rank_device,
    shard,
)
from auditor.runner.exemplars import (
    ClassEvidence,
    evidence_payload,
    off_object_samples,
)
from auditor.runner.hotspots import controlled_hotspots
from auditor.runner.judge import (
    check_scored,
    class_models,
    judged,
    with_class_models,
    with_groups,
    with_mean_backgrounds,
)
from auditor.runner.overlays import overlay_hijacks
from auditor.runner.preflight import (
    Probe,
    answered,
    check_classes,
    check_labels,
    method_faithfulness,
    method_trust,
    probe_samples,
    resolve_device,
    runnable_methods,
    target_layer,
)
from auditor.runner.provenance import fingerprint, input_parts, run_info
from auditor.runner.sample import InterventionSample
from auditor.runner.summary import (
    group_summary,
    subgroup_evidence,
    subgroup_frame,
    summary,
    with_subgroups,
)
from auditor.runner.timing import Phases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """An audit's inputs, read and checked, with the digests that identify them
    (:func:`~auditor.runner.provenance.input_parts`): enough to tell, before any image is
    scored, whether an earlier run already audited exactly these inputs."""

    loaded: LoadedModel
    info: DatasetInfo
    data: str | Path
    config: AuditConfig
    device: torch.device
    outputs: int
    layer: TargetLayer | None
    parts: dict[str, str]
    started: float

    @property
    def fingerprint(self) -> dict[str, str | None]:
        return fingerprint(self.parts, self.loaded.sha256)


def prepare(
    model: str | LoadedModel,
    *,
    data: str | Path,
    weights: str | Path | None = None,
    images: str | Path | None = None,
    config: AuditConfig | None = None,
    world: World = SINGLE,
) -> Prepared:
    """Load the model and the dataset, check that they fit, and digest them (on this
    rank's device under torchrun)."""
    config = config or AuditConfig()
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else load_model(model, weights)
    info = read_dataset(
        data,
        images=images,
        split=config.split,
        label_policy=config.label_policy,
        class_map=config.class_map,
        attributes=config.attributes,
    )
    if not info.records:
        raise DataError(f"{info.source}: the dataset lists no image to audit.")
    check_group_by(info.records, config.group_by, source=info.source)
    device = rank_device(resolve_device(config.device), world)
    net = select_logits(loaded.model.to(device), config.output_key)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)
    outputs = count_outputs(net, image_size=config.image_size, device=device)
    check_classes(outputs, info, explicit_map=config.class_map is not None)
    check_labels(loaded, info, explicit_map=config.class_map is not None)
    layer = target_layer(net, config, device)
    parts = input_parts(net, spec=loaded.spec, info=info, config=config)
    return Prepared(loaded, info, data, config, device, outputs, layer, parts, started)


def audit(
    model: str | LoadedModel | Prepared,
    *,
    data: str | Path | None = None,
    weights: str | Path | None = None,
    images: str | Path | None = None,
    config: AuditConfig | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
) -> AuditRun:
    """Audit ``model`` on ``data`` and return the results (see :func:`auditor.run.save_run`);
    ``model`` may be the result of :func:`prepare`, which then holds the data and config.

    With ``checkpoint``, progress is saved there as the audit goes, and an earlier
    interrupted run of the same model, data and config resumes where it stopped.
    Under torchrun, :func:`auditor.runner.workflow.audit_to_dir` runs the same three steps
    over the ranks.
    """
    if isinstance(model, Prepared):
        ready = model
    elif data is None:
        raise TypeError("audit() needs data unless given a prepared audit")
    else:
        ready = prepare(model, data=data, weights=weights, images=images, config=config)
    checked = preflight(ready)
    return assemble(ready, stream(ready, checked, progress=progress, checkpoint=checkpoint))


@dataclass(frozen=True)
class Checked:
    """What preflight found, the same for every rank: the config with the methods that can
    run, why the others cannot, the donor pool, which methods may be trusted, and the time
    it took."""

    config: AuditConfig
    method_errors: dict[str, str]
    pool: DonorPool | None
    trust: dict[str, Any]
    clock: Phases

    def on(self, device: torch.device) -> Checked:
        """The same, with the donor pool on ``device`` (the CPU to send it to other ranks)."""
        if self.pool is None:
            return self
        pool = dataclasses.replace(self.pool, backgrounds=self.pool.backgrounds.to(device))
        return dataclasses.replace(self, pool=pool)


def preflight(ready: Prepared) -> Checked:
    """The probe images, the methods that can run, the donor pool and the sanity checks."""
    config, device, net, layer = ready.config, ready.device, ready.loaded.model, ready.layer
    clock = Phases()
    with clock.phase("preflight", device):
        probe = usable_probe(ready, config)
        config, method_errors = runnable_methods(net, probe, layer, config)
        pool = donor_pool(probe)
    with clock.phase("sanity", device):
        trust = method_trust(net, probe, layer, config)
    with clock.phase("faithfulness", device):
        trust = method_faithfulness(net, probe, layer, config, trust)
    return Checked(config, method_errors, pool, trust, clock)


@dataclass
class Streamed:
    """The rows and evidence of one rank's shard (of every image, in one process), with
    what preflight found but the donor pool (it is sent to rank 0); ``shards``: how many
    ranks' parts it holds."""

    state: Progress
    config: AuditConfig
    method_errors: dict[str, str]
    trust: dict[str, Any]
    clock: Phases
    shards: int = 1
    resume: Resume = field(default_factory=lambda: Resume("fresh"))


def stream(
    ready: Prepared,
    checked: Checked,
    *,
    progress: bool = False,
    checkpoint: Path | None = None,
    world: World = SINGLE,
) -> Streamed:
    """Audit this rank's shard (every image in one process), batch by batch, saving
    progress to ``checkpoint`` and resuming from it."""
    info, config, device = ready.info, checked.config, ready.device
    net, layer, pool = ready.loaded.model, ready.layer, checked.pool
    transform = transform_of(config)
    fresh = Keyed({
        i: ClassEvidence.bounded(
            config.exemplars_per_class,
            small=MapSample(config.subgroup_maps, 0),
            off_object=off_object_samples(config.methods, config.hotspot_maps, config.detect.seed),
        )
        for i in range(len(info.class_names))
    })  # fmt: skip
    saver = Checkpoint(checkpoint, ready.parts)
    columns = sample_columns(active(config.extra_interventions))
    state = saver.load(Progress(rows=Rows(tuple(columns)), evidence=fresh))
    clock = Phases(dict(checked.clock.seconds))
    positions = None
    if world.sharded:
        n = len(info.records)
        positions = shard(n, rank=world.rank, size=world.size, batch_size=config.batch_size)
    stream = batches(info.records, transform, config, device, progress, start=state.done,
                     positions=positions)  # fmt: skip
    fitted = HalvingOnOOM()
    sample = InterventionSample.of([r.label for r in info.records], len(info.class_names), config)
    try:
        for batch in stream:
            state.rows.update(fitted(batch, lambda part: audit_batch(
                net, part, info.records, layer, transform, state.evidence, config, pool, clock,
                sample,
            )))  # fmt: skip
            state.done += len(batch["index"])
            saver.maybe_save(state)
    finally:  # kept whatever happens next: another rank or the detection may still fail
        saver.maybe_save(state, force=True)
    return Streamed(state, config, checked.method_errors, checked.trust, clock, resume=saver.found)


def merged(parts: list[Streamed]) -> Streamed:
    """Every rank's part as one: rank 0's preflight and timings, everyone's rows and
    evidence (:func:`~auditor.runner.distributed.merged_progress`)."""
    if len(parts) == 1:
        return parts[0]
    state = merged_progress([p.state for p in parts])
    return dataclasses.replace(parts[0], state=state, shards=len(parts))


def assemble(ready: Prepared, streamed: Streamed) -> AuditRun:
    """Detection, class models, summary and run record from the streamed rows and evidence."""
    loaded, info, device, layer = ready.loaded, ready.info, ready.device, ready.layer
    config, trust, clock = streamed.config, streamed.trust, streamed.clock
    evidence = streamed.state.evidence
    rows = streamed.state.rows.frame()
    if streamed.shards > 1:
        rows = in_batch_order(rows, config.batch_size)
    samples = with_groups(rows, info, config.group_by)
    check_scored(samples, info)
    data_sha = file_sha256(info.source) if info.source.is_file() else None
    with clock.phase("overlay", device):
        k = len(info.class_names)
        overlaid = overlay_hijacks(
            ready.loaded.model, lambda: usable_probe(ready, config, size=config.overlay_images),
            k, neutral_classes(samples, k, config.detect), config, transform_of(config),
            dict(zip(samples["sample"], samples["correct"])),
        )  # fmt: skip
    with clock.phase("detection", device):
        spots = controlled_hotspots(
            ready.loaded.model, lambda: usable_probe(ready, config), layer, config,
            {c: e.off_object for c, e in evidence.items()},
        )  # fmt: skip
        results, groups, found = judged(
            samples, evidence, info, config, trust["untrusted"], spots, overlaid.tests
        )
    with clock.phase("class_models", device):
        drawn = class_models(ready.loaded.model, results, config, device)
    timings = {"total_s": round(time.perf_counter() - ready.started, 3), **clock.rounded()}
    assembled = summary(loaded, info, ready.data, data_sha, config, results, samples)
    assembled |= group_summary(groups, found, results, info, config)
    assembled |= {"trust": trust, "method_errors": streamed.method_errors}
    info_json = run_info(loaded, ready.outputs, info, ready.data, config, layer, device, timings)
    info_json["inputs"] = {**ready.fingerprint, "parts": ready.parts}
    info_json["partial_methods"] = trust.get("partial", {})
    info_json["world_size"] = streamed.shards
    info_json["checkpoint"] = streamed.resume.to_dict()
    kept = evidence_payload(evidence, info.class_names) | subgroup_evidence(found, info)
    return AuditRun(
        summary=phrased(
            read_summary(with_subgroups(assembled, found, info, config)), config.detect.confidence
        ),
        samples=samples,
        run_info=info_json,
        evidence=with_mean_backgrounds(
            with_class_models(kept, drawn), results, overlaid.pictures, info
        ),
        subgroups=subgroup_frame(found, info),
    )


def transform_of(config: AuditConfig) -> AuditTransform:
    return AuditTransform(
        config.image_size, config.normalize, geometry="pad" if config.keep_aspect else "stretch"
    )


def usable_probe(ready: Prepared, config: AuditConfig, size: int | None = None) -> Probe | None:
    """The probe samples (:func:`probe_samples`; ``size``, default ``donor_pool``, of them)
    the model answers with finite logits."""
    size = config.donor_pool if size is None else size
    probe = probe_samples(ready.info.records, transform_of(config), size=size, device=ready.device)
    return answered(ready.loaded.model, probe, config)


def donor_pool(probe: Probe | None) -> DonorPool | None:
    """The probe images with their objects removed: the backgrounds the swaps paste onto."""
    if probe is None:
        return None
    return DonorPool(remove_object(probe.inputs, probe.masks), probe.labels, probe.positions)


def batches(
    records: list[Record],
    transform: AuditTransform,
    config: AuditConfig,
    device: torch.device,
    progress: bool,
    *,
    start: int = 0,
    positions: Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Batches of the samples at ``positions`` (default: all, in dataset order), from the
    ``start``-th on."""
    workers = config.num_workers
    dataset = AuditDataset(records, transform)
    chosen = range(len(records)) if positions is None else positions
    remaining = Subset(dataset, chosen[start:]) if start or positions is not None else dataset
    loader = DataLoader(  # in order: batch k holds samples k*B .. k*B+B-1 with any workers
        remaining,
        batch_size=config.batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        in_order=True,
    )
    bar = progress_bar(len(chosen), initial=start, desc="audit", disable=not progress)
    with bar:
        for batch in loader:
            bar.update(len(batch["index"]))
            yield batch
