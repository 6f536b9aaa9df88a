"""torchrun sharding: the shards cover every image once, the ranks' parts merge into
exactly the one-process result (also after a rank resumes), a failure on any rank fails
every rank, and a 2-process gloo launch writes the same run as one process."""

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from auditor.cli import cli
from auditor.config import AuditConfig
from auditor.errors import ConfigError, DataError
from auditor.models import load_model
from auditor.runner import distributed, pipeline
from auditor.runner.distributed import (
    SINGLE,
    World,
    checkpoint_path,
    from_leader,
    other_checkpoints,
    shard,
    sharded,
    world_from_env,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).parent
CONFIG = AuditConfig(image_size=32, batch_size=16)  # 100 images: 7 batches, the last of 4


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_shards_cover_every_position_exactly_once_in_whole_batches(batch_size):
    for size in range(1, 6):
        for n in range(12):
            shards = [shard(n, rank=r, size=size, batch_size=batch_size) for r in range(size)]
            assert sorted(i for s in shards for i in s) == list(range(n)), (size, n)
            for s in shards:
                assert s == sorted(s)
                for b in {i // batch_size for i in s}:  # the one-process batch, whole
                    assert set(range(b * batch_size, min((b + 1) * batch_size, n))) <= set(s)


def test_world_is_read_from_torchrun_environment():
    assert world_from_env({}) == SINGLE and world_from_env({"WORLD_SIZE": "1"}) == SINGLE
    world = world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert world == World(2, 4, 0) and world.sharded and not world.leader
    with pytest.raises(ConfigError, match="RANK"):
        world_from_env({"WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match=r"RANK in 0\.\.1"):
        world_from_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_each_rank_has_its_own_checkpoint_and_other_world_sizes_are_not_resumed(tmp_path):
    base = tmp_path / ".partial.pt"
    assert checkpoint_path(base, SINGLE) == base
    assert checkpoint_path(base, World(1, 2)) == tmp_path / ".partial.rank1-of-2.pt"
    for name in (".partial.pt", ".partial.rank0-of-3.pt", ".partial.rank1-of-2.pt",
                 ".partial.rank1-of-2.rows-00001.pt", "other.rank0-of-2.pt"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    left = [tmp_path / ".partial.pt", tmp_path / ".partial.rank0-of-3.pt"]
    assert other_checkpoints(base, World(0, 2)) == left
    assert other_checkpoints(base, SINGLE) == [left[1], tmp_path / ".partial.rank1-of-2.pt"]


@pytest.fixture(scope="module")
def model(planted_weights):
    return load_model("planted:background_reader", planted_weights)


@pytest.fixture(scope="module")
def ready(model, planted_dataset):
    return pipeline.prepare(model, data=planted_dataset, config=CONFIG)


@pytest.fixture(scope="module")
def one_process(ready):
    return pipeline.audit(ready)


def assert_same_run(one, many, size):
    assert many.summary == one.summary
    pd.testing.assert_frame_equal(many.samples, one.samples)
    pd.testing.assert_frame_equal(many.subgroups, one.subgroups)
    assert many.run_info["world_size"] == size and one.run_info["world_size"] == 1
    for name, evidence in one.evidence["classes"].items():
        other = many.evidence["classes"][name]
        for kind in ("exemplars", "broken_exemplars"):
            assert [e["image_id"] for e in other[kind]] == [e["image_id"] for e in evidence[kind]]
        for key, mean in evidence["means"].items():  # sums added in another order
            torch.testing.assert_close(other["means"][key], mean)


@pytest.mark.parametrize("size", [2, 3, 8])  # 8 ranks for 7 batches: one audits nothing
def test_the_ranks_parts_merge_into_the_one_process_run(ready, one_process, size):
    assert one_process.summary.flagged_classes  # evidence, broken swaps, class models
    checked = pipeline.preflight(ready)
    parts = [pipeline.stream(ready, checked, world=World(r, size)) for r in range(size)]
    assert sum(len(p.state.rows) for p in parts) == len(one_process.samples)
    assert_same_run(one_process, pipeline.assemble(ready, pipeline.merged(parts)), size)


def test_a_rank_resumes_its_own_shard(ready, one_process, tmp_path, monkeypatch):
    checked = pipeline.preflight(ready)
    world = World(1, 2)
    path = checkpoint_path(tmp_path / ".partial.pt", world)
    original, calls = pipeline.audit_batch, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "audit_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.stream(ready, checked, world=world, checkpoint=path)
    monkeypatch.setattr(pipeline, "audit_batch", original)
    assert torch.load(path, weights_only=True)["done"] == 16
    parts = [
        pipeline.stream(ready, checked, world=World(0, 2)),
        pipeline.stream(ready, checked, world=world, checkpoint=path),
    ]
    assert parts[1].state.done == 48  # its 3 batches (numbers 1, 3, 5), one of them resumed
    assert_same_run(one_process, pipeline.assemble(ready, pipeline.merged(parts)), 2)


class Collectives:
    """Two ranks as two threads of this process: the gather and broadcast that
    :mod:`auditor.runner.distributed` makes through ``torch.distributed``, with a barrier."""

    def __init__(self, size: int) -> None:
        self.barrier = threading.Barrier(size, timeout=10)
        self.slots: list[object] = [None] * size

    def gather(self, world: World, part: object) -> list[object] | None:
        return self._exchange(world, part, lambda: list(self.slots) if world.leader else None)

    def broadcast(self, world: World, value: object) -> object:
        return self._exchange(world, value if world.leader else None, lambda: self.slots[0])

    def _exchange(self, world, value, read):
        if value is not None or world.leader:
            self.slots[world.rank] = value
        self.barrier.wait()
        got = read()
        self.barrier.wait()
        self.slots = [None] * len(self.slots)
        self.barrier.wait()
        return got


def on_two_ranks(monkeypatch, step):
    """``step(world)`` on ranks 0 and 1 at once: per rank ``["ok", result]`` or
    ``[error type, message]``."""
    group = Collectives(2)
    monkeypatch.setattr(distributed, "_gather", group.gather)
    monkeypatch.setattr(distributed, "_broadcast", group.broadcast)

    def outcome(rank):
        try:
            return ["ok", step(World(rank, 2))]
        except Exception as exc:
            return [type(exc).__name__, str(exc)]

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(outcome, range(2)))


def fails_on(where: int):
    def work(world: World) -> int:
        if world.rank == where:
            raise DataError(f"broken on rank {where}")
        return world.rank

    return work


def test_each_rank_sends_its_part_and_rank_0_alone_finishes(monkeypatch):
    leader, follower = on_two_ranks(monkeypatch, lambda w: sharded(w, lambda: w.rank + 1, sum))
    assert leader == ["ok", 3] and follower == ["ok", None]


def test_a_failing_follower_fails_every_rank(monkeypatch):
    work = fails_on(1)
    leader, follower = on_two_ranks(monkeypatch, lambda w: sharded(w, lambda: work(w), sum))
    assert leader == ["DistributedError", "rank 1 of the torchrun audit failed: broken on rank 1"]
    assert follower == ["DataError", "broken on rank 1"]


def test_a_failure_on_rank_0_fails_every_rank(monkeypatch):
    work = fails_on(0)
    leader, follower = on_two_ranks(monkeypatch, lambda w: sharded(w, lambda: work(w), sum))
    assert leader == ["DataError", "broken on rank 0"]
    assert follower[0] == "DistributedError" and "rank 0" in follower[1]

    def finish(parts):
        raise DataError("detection failed")

    leader, follower = on_two_ranks(monkeypatch, lambda w: sharded(w, lambda: w.rank, finish))
    assert leader == ["DataError", "detection failed"]
    assert follower[0] == "DistributedError" and "detection failed" in follower[1]


def test_rank_0_sends_preflight_or_its_failure(monkeypatch):
    sent = on_two_ranks(monkeypatch, lambda w: from_leader(w, lambda: {"methods": ["gradcam"]}))
    assert sent == [["ok", {"methods": ["gradcam"]}]] * 2
    work = fails_on(0)
    leader, follower = on_two_ranks(monkeypatch, lambda w: from_leader(w, lambda: work(w)))
    assert leader[0] == "DataError" and follower[0] == "DistributedError"


def _audit_args(out: Path, data: Path, weights: Path) -> list[str]:
    return ["audit", "--model", "planted:background_reader", "--weights", str(weights),
            "--data", str(data), "--out", str(out), "--image-size", "32", "--batch-size", "16",
            "--no-pdf", "--no-history", "--name", "planted"]  # fmt: skip


def _comparable(value):
    """The run's values without what may differ between launches."""
    if isinstance(value, dict):
        volatile = {"timings", "created", "world_size", "report_bytes"}
        return {k: _comparable(v) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


@pytest.mark.slow
def test_torchrun_on_two_processes_writes_the_one_process_run(
    planted_dataset, planted_weights, tmp_path
):
    one, two = tmp_path / "one", tmp_path / "two"
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    torchrun = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "auditor", *_audit_args(two, planted_dataset, planted_weights)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    single = CliRunner().invoke(cli, _audit_args(one, planted_dataset, planted_weights))
    output = torchrun.communicate(timeout=300)[0]
    assert single.exit_code == 0, single.output
    assert torchrun.returncode == 0, output
    assert output.count("Verdict: FAIL") == 1  # rank 0 alone reports
    summaries = [json.loads((out / "summary.json").read_text()) for out in (one, two)]
    assert summaries[0]["flagged_classes"] and summaries[1] == summaries[0]
    samples = [pd.read_parquet(out / "samples.parquet") for out in (one, two)]
    pd.testing.assert_frame_equal(samples[1], samples[0])
    infos = [json.loads((out / "run.json").read_text()) for out in (one, two)]
    assert [i["world_size"] for i in infos] == [1, 2]
    assert _comparable(infos[1]) == _comparable(infos[0])
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
