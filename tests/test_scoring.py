import math

import pytest
import torch

from auditor.scoring import chance_corrected, energy_inside, mask_fraction


def slow_energy(maps: torch.Tensor, masks: torch.Tensor) -> list[float]:
    """Pixel loop in float64: sum(L*M)/sum(L), NaN for an all-zero map."""
    out = []
    for m, k in zip(maps.double(), masks):
        inside = total = 0.0
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                total += float(m[y, x])
                inside += float(m[y, x]) if bool(k[y, x]) else 0.0
        out.append(inside / total if total > 0 else math.nan)
    return out


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 9, 11, generator=g) ** 3
    masks = torch.rand(5, 9, 11, generator=g) > 0.6
    return maps, masks


def test_energy_matches_float64_loop(batch):
    maps, masks = batch
    expected = torch.tensor(slow_energy(maps, masks))
    torch.testing.assert_close(
        energy_inside(maps, masks).double(), expected.double(), atol=1e-6, rtol=0
    )


def test_scores_are_scale_invariant(batch):
    maps, masks = batch
    torch.testing.assert_close(chance_corrected(maps * 1e4, masks), chance_corrected(maps, masks))


def test_all_inside_gives_one_all_outside_gives_negative_area_ratio(batch):
    _, masks = batch
    assert torch.allclose(chance_corrected(masks.float(), masks), torch.ones(5))
    a = mask_fraction(masks)
    assert torch.allclose(chance_corrected((~masks).float(), masks), -a / (1 - a))
    assert torch.allclose(energy_inside((~masks).float(), masks), torch.zeros(5))


def test_uniform_map_scores_chance(batch):
    _, masks = batch
    uniform = torch.ones(masks.shape)
    assert torch.allclose(energy_inside(uniform, masks), mask_fraction(masks))
    assert torch.allclose(chance_corrected(uniform, masks), torch.zeros(5), atol=1e-6)


def test_degenerate_samples_are_nan_not_fake():
    maps = torch.rand(3, 4, 4)
    maps[0] = 0
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # zero map
    masks[2] = True  # full mask; sample 1 has an empty mask
    scores = chance_corrected(maps, masks)
    assert torch.isnan(scores).all()


def test_empty_batch():
    assert chance_corrected(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (
        0,
    )


def test_inputs_not_mutated(batch):
    maps, masks = batch
    before = maps.clone()
    chance_corrected(maps, masks)
    assert torch.equal(maps, before)
