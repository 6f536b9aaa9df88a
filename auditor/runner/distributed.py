"""Many processes: ``torchrun --nproc-per-node N -m auditor audit ...``. Each rank audits a
shard of the dataset; rank 0 gathers the rows and the bounded evidence, judges and writes
the run, and the result equals the one-process run.

A shard is made of whole batches, dealt round robin (batch k to rank k mod N), so every
batch holds exactly the images it holds in one process: the same maps, scores and
exemplar candidates, bit for bit. Rank 0 puts the rows back in batch order
(:func:`in_batch_order`); the per-class evidence merges exactly, since the exemplars and the
map sample are chosen by order-independent rules
(:class:`~auditor.accumulate.Accumulator`).

From rank 0's preflight on, every rank reaches every collective, also after a failure: a
rank that fails sends its failure in place of its part, rank 0 sends the outcome to all,
and every rank then raises (its own error, or :class:`~auditor.errors.DistributedError`
naming the rank that failed), so no rank waits for one that stopped and none exits 0 when
another failed. A process that fails earlier (loading the model or the data) exits, and
torchrun stops the others.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import pandas as pd
import torch
import torch.distributed as dist

from auditor.errors import AuditorError, ConfigError, DistributedError
from auditor.runner.checkpoint import Progress

T = TypeVar("T")
P = TypeVar("P")

# How long a rank waits in a collective: for the slowest shard, and for rank 0's detection,
# report and history while the others wait for its outcome. A rank that dies ends the job
# sooner: torchrun stops the others.
PATIENCE = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """Which process this is among how many (torchrun's ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK``, the process's index on its machine)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        """Rank 0: the one that judges and writes the run."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env(env: Mapping[str, str]) -> World:
    """The world torchrun describes in ``env`` (``os.environ``); one process without it."""
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        if size <= 1:
            return SINGLE
        world = World(int(env["RANK"]), size, int(env.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            "Expected torchrun's RANK and WORLD_SIZE as integers with WORLD_SIZE > 1, got "
            f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r} ({exc})."
        ) from None
    if not 0 <= world.rank < size:
        raise ConfigError(f"Expected RANK in 0..{size - 1}, got {world.rank}.")
    return world


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA under torchrun."""
    if world.sharded and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Joined to the other ranks (NCCL for CUDA, gloo on the CPU) while inside; nothing for
    one process. ``device`` is this rank's (:func:`rank_device`)."""
    if not world.sharded:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the object collectives travel on the current device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=PATIENCE)
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard(n: int, *, rank: int, size: int, batch_size: int) -> list[int]:
    """The dataset positions (of ``n``) that ``rank`` of ``size`` audits, in order: the
    batches of ``batch_size`` numbered ``rank``, ``rank + size``, ... Over all ranks, every
    position exactly once; a rank beyond the number of batches gets none."""
    step = size * batch_size
    return [
        i
        for start in range(rank * batch_size, n, step)
        for i in range(start, min(start + batch_size, n))
    ]


def checkpoint_path(path: Path, world: World) -> Path:
    """A rank's own resume checkpoint beside ``path``: ``.partial.rank1-of-4.pt``. A run with
    another number of processes finds none of these and starts afresh (see
    :func:`other_checkpoints`)."""
    if not world.sharded:
        return path
    stem = path.name.removesuffix(".pt")
    return path.with_name(f"{stem}.rank{world.rank}-of-{world.size}.pt")


def other_checkpoints(path: Path, world: World) -> list[Path]:
    """Checkpoints beside ``path`` left by a run with another number of processes: they
    cannot be resumed by this one (its shards differ), so they are only named."""
    pattern = re.escape(path.name.removesuffix(".pt")) + r"\.rank\d+-of-\d+\.pt"
    found = [p for p in path.parent.glob("*.pt") if re.fullmatch(pattern, p.name)]
    mine = [checkpoint_path(path, dataclasses.replace(world, rank=r)) for r in range(world.size)]
    return sorted(p for p in [*found, path] if p.is_file() and p not in mine)


def in_batch_order(samples: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """Rows gathered rank after rank, in the order one process writes them: batch by batch
    (a stable sort keeps the order inside a batch, where skipped images come first)."""
    batch = samples["sample"].to_numpy() // batch_size
    order = pd.Series(batch).sort_values(kind="stable").index
    return samples.iloc[order].reset_index(drop=True)


def merged_progress(parts: Sequence[Progress]) -> Progress:
    """The progress of every rank as one: rows rank after rank (see :func:`in_batch_order`),
    each class's evidence merged from every rank. ``parts`` are not changed."""
    whole = parts[0].empty()
    for part in parts:
        whole.merge(part)
    return whole


@dataclass(frozen=True)
class Failed:
    """What a rank sends in place of its part when it failed."""

    rank: int
    message: str


def from_leader(world: World, make: Callable[[], T] | None = None) -> T:
    """``make()`` computed on rank 0 and sent to every rank (``make`` is called on rank 0
    only). When it fails there, rank 0 raises its error and every other rank a
    :class:`DistributedError`, instead of waiting."""
    if not world.leader:
        received = _broadcast(world, None)
        if isinstance(received, Failed):
            raise DistributedError(_peer_failed(received))
        return cast(T, received)
    assert make is not None, "rank 0 computes what it sends"
    try:
        value = make()
    except Exception as exc:
        _broadcast(world, Failed(world.rank, _describe(exc)))
        raise
    _broadcast(world, value)
    return value


def sharded(world: World, work: Callable[[], P], finish: Callable[[list[P]], T]) -> T | None:
    """``work()`` on every rank, then ``finish`` on rank 0 over what every rank's ``work``
    returned (in rank order). Returns ``finish``'s result on rank 0, None on the others. A
    failure anywhere fails every rank: the rank that failed raises its own error, the
    others :class:`DistributedError` naming it (``finish`` runs only when no work failed)."""
    error: Exception | None = None
    own: P | Failed
    try:
        own = work()
    except Exception as exc:
        own, error = Failed(world.rank, _describe(exc)), exc
    parts = _gather(world, own)
    result: T | None = None
    verdict: Failed | None = None
    if parts is not None:
        verdict = next((p for p in parts if isinstance(p, Failed)), None)
        if verdict is None:
            try:
                result = finish(cast(list[P], parts))
            except Exception as exc:
                verdict, error = Failed(world.rank, _describe(exc)), exc
    verdict = _broadcast(world, verdict)
    if error is not None:
        raise error
    if verdict is not None:
        raise DistributedError(_peer_failed(verdict))
    return result


def _gather(world: World, part: Any) -> list[Any] | None:
    """Every rank's ``part`` on rank 0 (in rank order), None on the others."""
    if not world.sharded:
        return [part]
    parts: list[Any] | None = [None] * world.size if world.leader else None
    dist.gather_object(part, parts, dst=0)
    return parts


def _broadcast(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not world.sharded:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, AuditorError) else f"{type(exc).__name__}: {exc}"


def _peer_failed(failed: Failed) -> str:
    return f"rank {failed.rank} of the torchrun audit failed: {failed.message}"
