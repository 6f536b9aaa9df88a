"""The streamed-state protocol: every accumulator of the audit gives the same result whether
its stream is seen whole, split between ranks and merged, or saved and loaded halfway."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import torch

from auditor.accumulate import Composite, Keyed, Total
from auditor.detect.maps import MapSample
from auditor.runner.exemplars import ClassEvidence, Exemplar


def _exemplar(score: float, i: int) -> Exemplar:
    return Exemplar(score, f"img{i}", f"{i}.png", 0, 1, torch.zeros(3, 4, 4, dtype=torch.uint8),
                    torch.zeros(4, 4, dtype=torch.bool), {"m": torch.zeros(4, 4)}, {"m": score},
                    {})  # fmt: skip


def _feed(evidence: ClassEvidence, positions: range) -> None:
    """One batch of the positions: means, subgroup maps, off-object maps, exemplars."""
    g = torch.Generator().manual_seed(positions.start)
    n = len(positions)
    maps = torch.rand(n, 8, 8, generator=g)
    evidence.add_means({"m": maps}, torch.rand(n, 8, 8, generator=g) > 0.5)
    small = torch.rand(n, 256, generator=g)
    evidence.small.update(list(positions), small)
    evidence.off_object["m"].update(list(positions), small)
    for i in positions:
        evidence.exemplars.update(_exemplar(float(torch.rand(1, generator=g)), i), i)
        evidence.broken.update(_exemplar(-float(i % 7), i), i)


def _summary(evidence: ClassEvidence) -> tuple:
    means = evidence.means()
    return (
        [e.image_id for e in evidence.exemplars.ranked()],
        [e.image_id for e in evidence.broken.ranked()],
        evidence.small.ordered()[0],
        evidence.off_object["m"].ordered()[0],
        evidence.masks.n,
        {k: v.double() for k, v in means.items()},
    )


def _same(a: tuple, b: tuple) -> None:
    assert a[:5] == b[:5]
    assert a[5].keys() == b[5].keys() == {"m", "mask"}
    for key in a[5]:
        torch.testing.assert_close(a[5][key], b[5][key])


def _fresh() -> ClassEvidence:
    return ClassEvidence.bounded(
        3, small=MapSample(5, 1), off_object={"m": MapSample(4, 2)}
    )  # fmt: skip


def test_class_evidence_merged_from_ranks_equals_one_stream():
    whole = _fresh()
    for start in range(0, 60, 10):
        _feed(whole, range(start, start + 10))
    ranks = [_fresh(), _fresh()]
    for k, start in enumerate(range(0, 60, 10)):  # batches dealt round robin
        _feed(ranks[k % 2], range(start, start + 10))
    merged = ranks[0].empty()
    for part in ranks:
        merged.merge(part)
    _same(_summary(merged), _summary(whole))
    assert _summary(ranks[0])[4] == 30  # merging left the parts as they were


def test_class_evidence_saved_halfway_and_loaded_goes_on_as_if_never_stopped():
    whole, stopped = _fresh(), _fresh()
    for start in range(0, 60, 10):
        _feed(whole, range(start, start + 10))
    for start in range(0, 30, 10):
        _feed(stopped, range(start, start + 10))
    saved = pickle.loads(pickle.dumps(stopped.state()))  # what reaches the disk
    resumed = _fresh().empty()
    resumed.load(saved)
    for start in range(30, 60, 10):
        _feed(resumed, range(start, start + 10))
    _same(_summary(resumed), _summary(whole))


def test_a_new_streamed_statistic_is_one_field():
    """A composite of a new statistic merges and saves without code of its own."""

    @dataclass
    class Stats(Composite):
        brightness: Keyed[Total]
        seen: int = 0

    a, b = Stats(Keyed(make=Total)), Stats(Keyed(make=Total))
    a.brightness.at("cat").update(torch.tensor([1.0, 2.0]), 2)
    b.brightness.at("cat").update(torch.tensor([3.0, 4.0]), 2)
    b.brightness.at("dog").update(torch.tensor([5.0]), 1)
    a.seen, b.seen = 2, 3
    both = a.empty()
    both.merge(a)
    both.merge(b)
    assert both.seen == 5 and set(both.brightness) == {"cat", "dog"}
    assert both.brightness["cat"].n == 4
    torch.testing.assert_close(both.brightness["cat"].mean(), torch.tensor([1.0, 1.5]))
    loaded = a.empty()
    loaded.load(both.state())
    assert loaded.seen == 5
    torch.testing.assert_close(loaded.brightness["dog"].mean(), torch.tensor([5.0]))


def test_a_keyed_accumulator_without_a_maker_refuses_an_unknown_key_but_merges_one():
    keyed = Keyed({"m": MapSample(2, 0)})
    try:
        keyed.at("other")
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown key was made without a maker")
    other = Keyed({"n": MapSample(2, 0)})
    other["n"].update([7], torch.ones(1, 256))
    keyed.merge(other)
    assert keyed["n"].samples == [7] and keyed["n"].keep == 2
    assert pickle.loads(pickle.dumps(Keyed(make=Total))).make is Total  # travels to rank 0
