"""Subgroup discovery: a bounded, order-free sample of small maps, the eigengap's count,
and clusters that follow the maps' shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from auditor.cli import cli
from auditor.detect.maps import GRID, MapSample, small_maps
from auditor.detect.subgroups import cluster_count, subgroups_of


def corner_and_centre(n_corner: int, n_centre: int, seed: int = 0) -> torch.Tensor:
    """Small maps of two kinds: mass in the top-left corner, or in the centre, with noise."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n_corner + n_centre, 32, 32, generator=g) * 0.2
    maps[:n_corner, :6, :6] += 1.0
    maps[n_corner:, 12:20, 12:20] += 1.0
    return small_maps(maps)


def test_small_maps_have_unit_mass_and_the_grid_size():
    maps = small_maps(torch.rand(3, 50, 40) * torch.tensor([1.0, 5.0, 0.0])[:, None, None])
    assert maps.shape == (3, GRID * GRID)
    torch.testing.assert_close(maps.sum(1), torch.tensor([1.0, 1.0, 0.0]))


def test_the_map_sample_is_bounded_and_independent_of_arrival_order():
    maps = corner_and_centre(30, 30)
    forward, backward = MapSample(keep=10, seed=3), MapSample(keep=10, seed=3)
    forward.update(list(range(60)), maps)
    for start in range(50, -10, -10):  # other batches, other order
        backward.update(list(range(start, start + 10)), maps[start : start + 10])
    assert len(forward.samples) == 10 and forward.ordered()[0] == backward.ordered()[0]
    again = forward.empty()
    again.load(forward.state())
    assert again.ordered()[0] == forward.ordered()[0]
    torch.testing.assert_close(again.ordered()[1], forward.ordered()[1])
    other_seed = MapSample(keep=10, seed=4)
    other_seed.update(list(range(60)), maps)
    assert other_seed.ordered()[0] != forward.ordered()[0]


def test_the_eigengap_counts_the_blocks_of_an_affinity():
    blocks = np.kron(np.eye(3), np.ones((5, 5))) - np.eye(15)
    assert cluster_count(blocks, max_k=6) == 3
    assert cluster_count(np.ones((8, 8)) - np.eye(8), max_k=6) == 1


def test_clusters_follow_where_the_maps_sit():
    labels = subgroups_of(corner_and_centre(40, 25), min_size=10)
    assert len(set(labels[:40])) == 1 and len(set(labels[40:])) == 1
    assert labels[0] != labels[40]


def test_maps_of_one_kind_form_no_subgroups():
    assert set(subgroups_of(corner_and_centre(60, 0), min_size=10)) == {0}
    assert set(subgroups_of(corner_and_centre(12, 7), min_size=10)) == {0}  # too few to split


@pytest.fixture(scope="module")
def mixed_run(planted_weights, tmp_path_factory):
    """The background reader on images where each class sits on its own background half the
    time: its maps on its own background differ from its maps elsewhere."""
    from auditor.lab.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("subgroups")
    spec = SyntheticSpec(background_strength=(0.5,) * 4, image_size=32, n_train=4, n_audit=240,
                         seed=8)  # fmt: skip
    data = write_dataset(spec, root)["audit"]
    result = CliRunner().invoke(cli, [
        "audit", "--model", "planted:background_reader", "--weights", str(planted_weights),
        "--data", str(data), "--out", str(root / "run"), "--image-size", "32", "--no-pdf",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.mark.slow
def test_subgroups_are_written_to_the_summary_and_a_parquet(mixed_run):
    import pandas as pd

    summary = json.loads((mixed_run / "summary.json").read_text())
    circle = summary["classes"][0]
    assert len(circle["subgroups"]) >= 2
    assert sum(s["n"] for s in circle["subgroups"]) == circle["n"]
    accuracies = sorted(s["accuracy"] for s in circle["subgroups"])
    assert accuracies[-1] == 1.0 and accuracies[0] < 0.7  # own background vs the rest
    frame = pd.read_parquet(mixed_run / "subgroups.parquet")
    members = frame[frame["class"] == "circle"]
    assert len(members) == circle["n"] and set(members["image_id"]) == {
        m for s in circle["subgroups"] for m in s["members"]
    }
    for s in circle["subgroups"]:
        assert (s["status"] in {"pass", "warn", "flag", "insufficient_data"} and s["reasons"]) or (
            s["status"] == "pass"
        )


def test_the_subgroup_method_is_computed_for_clustering_without_being_scored():
    from auditor.config import AuditConfig
    from auditor.errors import ConfigError

    assert AuditConfig().attributed == ("gradcam", "saliency", "gradient_x_input")
    assert AuditConfig(methods=("gradcam", "gradient_x_input")).attributed == (
        "gradcam", "gradient_x_input",
    )  # fmt: skip
    assert AuditConfig(subgroup_maps=0).attributed == ("gradcam", "saliency")
    with pytest.raises(ConfigError, match="subgroup_method"):
        AuditConfig(subgroup_method="lrp")
