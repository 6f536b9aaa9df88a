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


# --- against Quantus 0.6.0 and slow loops ---------------------------------------------

quantus = pytest.importorskip("quantus")

from auditor.scoring import (  # noqa: E402
    auroc,
    degenerate_reason,
    lift,
    pointing_game,
    rank_accuracy,
    topk_intersection,
    topk_iou,
)


@pytest.fixture
def random_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(6, 12, 12, generator=g, dtype=torch.float64).float()
    masks = torch.rand(6, 12, 12, generator=g) > 0.7
    return maps, masks


def run_quantus(metric, maps, masks):
    n = maps.shape[0]
    return torch.tensor(metric(model=None, x_batch=torch.zeros(n, 1, *maps.shape[1:]).numpy(),
                               y_batch=torch.zeros(n, dtype=torch.long).numpy(),
                               a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy()),
                        dtype=torch.float32)  # fmt: skip


SETTINGS = {"normalise": False, "abs": False, "disable_warnings": True}


@pytest.mark.parametrize("ours,theirs", [
    (energy_inside, lambda: quantus.RelevanceMassAccuracy(**SETTINGS)),
    (rank_accuracy, lambda: quantus.RelevanceRankAccuracy(**SETTINGS)),
    (auroc, lambda: quantus.AUC(**SETTINGS)),
    (lambda m, k: topk_intersection(m, k, k=20),
     lambda: quantus.TopKIntersection(k=20, **SETTINGS)),
], ids=["mass_accuracy", "rank_accuracy", "auc", "top_k_intersection"])  # fmt: skip
def test_matches_quantus(random_batch, ours, theirs):
    maps, masks = random_batch
    torch.testing.assert_close(
        ours(maps, masks), run_quantus(theirs(), maps, masks), atol=1e-6, rtol=0
    )


def test_auroc_with_ties_counts_half():
    maps = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    masks = torch.tensor([[[True, False, True, False]]])
    assert auroc(maps, masks).item() == pytest.approx(0.5)  # slow count: (1 + .5 + .5 + 0) / 4


def test_rank_metrics_on_perfect_and_inverted_maps(random_batch):
    _, masks = random_batch
    perfect = masks.float() + 0.01
    assert torch.allclose(rank_accuracy(perfect, masks), torch.ones(6))
    assert torch.allclose(topk_iou(perfect, masks), torch.ones(6))
    assert torch.allclose(auroc(perfect, masks), torch.ones(6))
    assert torch.allclose(auroc((~masks).float() + 0.01, masks), torch.zeros(6))
    assert torch.allclose(
        lift(perfect, masks) * mask_fraction(masks), energy_inside(perfect, masks)
    )


def test_pointing_game_tolerance_and_shared_ties():
    maps = torch.zeros(3, 40, 40)
    masks = torch.zeros(3, 40, 40, dtype=torch.bool)
    masks[:, 10:20, 10:20] = True
    maps[0, 15, 15] = 1.0  # on the object
    maps[1, 15, 21] = 1.0  # 2 px off: within 15/224 * 40 = 3 px
    maps[2, 30, 30] = maps[2, 12, 12] = 1.0  # two tied maxima, one hit
    assert pointing_game(maps, masks).tolist() == [1.0, 1.0, 0.5]
    assert pointing_game(maps, masks, tolerance=0)[1].item() == 0.0


def test_pointing_game_empty_mask_is_nan_not_a_hit():
    """Quantus 0.6.0's PointingGame scores an empty mask as a hit; an empty mask has no answer."""
    maps = torch.rand(1, 8, 8)
    assert torch.isnan(pointing_game(maps, torch.zeros(1, 8, 8, dtype=torch.bool))).all()


def test_ignored_pixels_leave_every_metric():
    g = torch.Generator().manual_seed(4)
    maps, masks = torch.rand(2, 10, 10, generator=g), torch.rand(2, 10, 10, generator=g) > 0.6
    valid = torch.ones(2, 10, 10, dtype=torch.bool)
    valid[:, :, 7:] = False
    changed = maps.clone()
    changed[:, :, 7:] = 100.0  # anything in the ignore region must not matter
    for metric in (energy_inside, chance_corrected, rank_accuracy, auroc, pointing_game, topk_iou):
        torch.testing.assert_close(metric(changed, masks, valid), metric(maps, masks, valid))
    cropped = energy_inside(maps[:, :, :7], masks[:, :, :7])
    torch.testing.assert_close(energy_inside(maps, masks, valid), cropped)


def test_degenerate_reasons():
    maps = torch.rand(4, 5, 5)
    maps[2] = 0
    masks = torch.zeros(4, 5, 5, dtype=torch.bool)
    masks[1] = True
    masks[2:, :2] = True
    assert degenerate_reason(maps, masks) == ["empty_mask", "full_mask", "zero_map", None]
    for metric in (rank_accuracy, auroc, pointing_game, topk_iou, lift):
        assert torch.isnan(metric(maps, masks)[:3]).all()


@pytest.mark.parametrize("size,tolerance", [(224, 15 / 224), (64, 15 / 224), (37, 0.1), (8, 0.01)])
def test_the_pointing_zone_is_the_square_dilation(size, tolerance):
    import torch.nn.functional as F

    from auditor.scoring import pointing_zone

    g = torch.Generator().manual_seed(size)
    masks = torch.rand(4, size, size, generator=g) > 0.995
    masks[0] = False  # an empty mask stays empty
    radius = round(tolerance * size)
    square = F.max_pool2d(masks[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    expected = square[:, 0] > 0 if radius else masks
    assert torch.equal(pointing_zone(masks, tolerance=tolerance), expected)


def test_batched_auroc_equals_the_mann_whitney_count_per_image():
    """Against scikit-learn's roc_auc_score per image, over Omega, with ties and an ignore
    region; unusable images (empty mask) are NaN."""
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(4)
    maps = (torch.rand(6, 16, 16, generator=g) * 4).round()  # few values: many ties
    masks = torch.rand(6, 16, 16, generator=g) > 0.7
    valid = torch.rand(6, 16, 16, generator=g) > 0.2
    masks[5] = False
    ours = auroc(maps, masks, valid)
    for i in range(5):
        keep = valid[i]
        expected = roc_auc_score(masks[i][keep].numpy(), maps[i][keep].numpy())
        assert ours[i].item() == pytest.approx(expected, abs=1e-6)
    assert torch.isnan(ours[5])
