"""ROAD and its imputation against pytorch-grad-cam (test-only reference), by hand, and on a
model whose evidence is known.

pytorch-grad-cam's ``ROADCombined`` is the reference for the combined score and its
``NoisyLinearImputer`` for the imputation; both run here with their noise set to 0 (its
ROAD builds the imputer itself, so the module-level name is patched).

Quantus 0.6.0's ``ROAD`` is used only on single-channel images. It ranks the attribution
after broadcasting it to the image's shape (C x H x W values) and hands those flat indices
to an imputation that reads them as pixel positions (H x W): with three channels and a
Tensor[N, 1, H, W] map it stops with an IndexError (index 253 for 10 x 10 pixels); with one
channel both index spaces coincide. It measures something else too (MoRF only: the accuracy
of the perturbed predictions at each percentage), so the test compares that accuracy with
the one our ranking and imputation give; at 10 x 10 pixels its count of removed pixels
(``int(n p / 100)``) equals pytorch-grad-cam's.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from auditor.detect.faithfulness import (
    FRACTIONS,
    Faithfulness,
    _add_prolonged,
    _grid,
    _level,
    _ranks,
    _removed_count,
    _restrict,
    faithfulness,
    impute,
    road,
)
from auditor.errors import AttributionError, ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")
# pytorch-grad-cam's imputer hands torch tensors to np.argwhere
THEIR_NUMPY_CALLS = pytest.mark.filterwarnings(
    "ignore:__array_wrap__ must accept context:DeprecationWarning"
)


def _their_imputation(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer(noise=0.0)  # its mask: 1 keeps a pixel, 0 imputes it
    return torch.stack([imputer(x, (~r).float()) for x, r in zip(images, removed)])


def _masks(height: int, width: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    border = torch.zeros(height, width, dtype=torch.bool)
    border[:3] = True
    border[:, :2] = True
    border[-1, -4:] = True
    hole = torch.zeros(height, width, dtype=torch.bool)
    hole[2 : height - 2, 3 : width - 1] = True
    one_known = torch.ones(height, width, dtype=torch.bool)
    one_known[height // 3, width - 2] = False
    return {
        "scattered": torch.rand(height, width, generator=g) < 0.4,
        "border": border,
        "large_hole": hole,
        "one_known": one_known,
    }


@THEIR_NUMPY_CALLS
@pytest.mark.parametrize("size", [(16, 16), (13, 22)])
@pytest.mark.parametrize("kind", ["scattered", "border", "large_hole", "one_known"])
def test_imputation_matches_pytorch_grad_cam_without_noise(size, kind):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, *size, generator=g)
    removed = _masks(*size)[kind].expand(3, *size).clone()
    removed[1] = torch.rand(*size, generator=g) < 0.7  # a different mask in the batch
    ours = impute(images, removed, noise=0.0)
    theirs = _their_imputation(images, removed)
    assert (ours - theirs).abs().max() < 1e-4
    known = ~removed[:, None].expand_as(images)
    assert torch.equal(ours[known], images[known])


def test_imputation_by_hand():
    image = torch.arange(1.0, 10.0).view(1, 1, 3, 3) ** 2  # 1 4 9 / 16 25 36 / 49 64 81
    centre = torch.zeros(1, 3, 3, dtype=torch.bool)
    centre[0, 1, 1] = True
    direct, diagonal = 4 + 16 + 36 + 64, 1 + 9 + 49 + 81
    expected = direct / 6 + diagonal / 12  # the weights of all eight neighbours sum to 1
    assert impute(image, centre, noise=0.0)[0, 0, 1, 1].item() == pytest.approx(expected)
    corner = torch.zeros(1, 3, 3, dtype=torch.bool)
    corner[0, 0, 0] = True  # three neighbours: 4 and 16 (1/6 each), 25 (1/12)
    expected = (4 / 6 + 16 / 6 + 25 / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert impute(image, corner, noise=0.0)[0, 0, 0, 0].item() == pytest.approx(expected)
    pair = torch.zeros(1, 3, 3, dtype=torch.bool)
    pair[0, 0, 0] = pair[0, 0, 1] = True  # two unknowns: a 2 x 2 system, solved here
    a = torch.tensor([[5 / 12, -1 / 6], [-1 / 6, 8 / 12]], dtype=torch.float64)
    b = torch.tensor([16 / 6 + 25 / 12, 9 / 6 + 16 / 12 + 25 / 6 + 36 / 12])
    solved = torch.linalg.solve(a, b.double())
    assert impute(image, pair, noise=0.0)[0, 0, 0, :2].tolist() == pytest.approx(solved.tolist())


@pytest.mark.parametrize("size", [(8, 8), (13, 10), (9, 11)])
def test_the_multigrid_transfers_are_adjoint_so_the_preconditioner_is_symmetric(size):
    """Restriction is a quarter of the adjoint of the bilinear prolongation, odd sizes too:
    without it the V-cycle is no SPD preconditioner and CG may stall."""
    g = torch.Generator().manual_seed(0)
    fine = torch.randn(2, *size, generator=g, dtype=torch.float64)
    coarse = torch.randn(2, (size[0] + 1) // 2, (size[1] + 1) // 2, generator=g).double()
    ones = torch.ones(2, *size, dtype=torch.float64)
    level = _level(ones, ones[:1])
    flat = torch.zeros_like(level.free)
    _add_prolonged(level, flat, coarse)
    prolonged = _grid(flat, *size)
    assert (4 * _restrict(fine) * coarse).sum().item() == pytest.approx((fine * prolonged).sum())
    constant = torch.zeros_like(level.free)
    _add_prolonged(level, constant, torch.ones_like(coarse))
    assert torch.allclose(_grid(constant, *size)[:, 1:-1, 1:-1], torch.ones(1).double())


def test_one_known_pixel_fills_the_image_with_its_value_in_a_nearly_singular_system():
    """The exact solution is a constant; a float32 operator (1/6, 1/12 rounded) is off by
    1e-4 at 64 px, which is why the solver's operator is float64."""
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    removed = torch.ones(1, 64, 64, dtype=torch.bool)
    removed[0, 21, 62] = False
    out = impute(images, removed, noise=0.0)
    assert (out - images[:, :, 21:22, 62:63]).abs().max() < 1e-5


def test_noise_goes_to_the_removed_pixels_only_and_follows_the_generator():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 12, 12, generator=g)
    removed = torch.rand(2, 12, 12, generator=g) < 0.5
    clean = impute(images, removed, noise=0.0)
    noisy = impute(images, removed, noise=0.1, generator=torch.Generator().manual_seed(5))
    again = impute(images, removed, noise=0.1, generator=torch.Generator().manual_seed(5))
    changed = (noisy != clean).all(dim=1)
    assert torch.equal(changed, removed) and torch.equal(noisy, again)
    assert (noisy - clean)[removed[:, None].expand_as(clean)].std() == pytest.approx(0.1, rel=0.1)


def test_an_image_with_everything_removed_becomes_zero_and_the_others_are_untouched():
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    removed = torch.zeros(2, 8, 8, dtype=torch.bool)
    removed[0] = True
    out = impute(images, removed, noise=0.0)
    assert torch.equal(out[0], torch.zeros(3, 8, 8)) and torch.equal(out[1], images[1])
    assert torch.isfinite(impute(images, removed, noise=0.01)).all()
    assert impute(images[:0], removed[:0]).shape == (0, 3, 8, 8)


# --- ROAD -----------------------------------------------------------------------------------


class Sharp(nn.Module):
    """A small CNN with large logits, so that removing a pixel moves its probabilities."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():  # PyTorch's own initialisation, the global RNG kept
            torch.manual_seed(0)
            self.features = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU())
            self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * self.fc(self.features(x).mean((2, 3)))


def _tie_free_maps(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Half a permutation of distinct values, half smooth blobs (CAM-like), no ties."""
    shuffled = torch.stack([torch.randperm(size * size, generator=generator) for _ in range(n)])
    maps = (shuffled.float() / size**2).view(n, size, size)
    blobs = torch.rand(n, 1, 4, 4, generator=generator, dtype=torch.float64)
    blobs = F.interpolate(blobs, size=(size, size), mode="bicubic", align_corners=False)
    maps[n // 2 :] = blobs[n // 2 :, 0].float()
    return maps


@THEIR_NUMPY_CALLS
def test_combined_road_matches_pytorch_grad_cam(monkeypatch):
    import pytorch_grad_cam.metrics.road as their_road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = Sharp().eval()
    g = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 24, 24, generator=g)
    maps = _tie_free_maps(4, 24, g)
    labels = torch.tensor([0, 1, 2, 1])
    ours = road(model, images, labels, maps, noise=0.0)

    class Silent(their_road.NoisyLinearImputer):
        def __init__(self) -> None:
            super().__init__(noise=0.0)

    monkeypatch.setattr(their_road, "NoisyLinearImputer", Silent)
    targets = [ClassifierOutputSoftmaxTarget(int(label)) for label in labels]
    metric = their_road.ROADCombined(percentiles=[round(100 * f) for f in FRACTIONS])
    theirs = torch.from_numpy(metric(images, maps.numpy(), targets, model))
    assert ours.abs().max() > 0.02  # scores big enough for the comparison to mean something
    assert (ours - theirs).abs().max() < 1e-4


def test_morf_accuracy_matches_quantus_on_single_channel_images():
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, 100, generator=g))
    images = torch.randn(24, 1, 10, 10, generator=g)
    labels = model(images).argmax(1)
    maps = _tie_free_maps(24, 10, g)
    percentages = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    metric = quantus.ROAD(noise=0.0, percentages=percentages, normalise=False, abs=False,
                          disable_warnings=True, display_progressbar=False)  # fmt: skip
    theirs = metric(model=model, x_batch=images.numpy(), y_batch=labels.numpy(),
                    a_batch=maps[:, None].numpy(), channel_first=True, device="cpu")  # fmt: skip
    ranks = _ranks(maps.flatten(1), torch.rand(24, 100, generator=g)).view(24, 10, 10)
    for p in percentages:
        count = _removed_count(100, p / 100)
        assert count == int(100 * p / 100)
        kept = model(impute(images, ranks >= 100 - count, noise=0.0)).argmax(1) == labels
        assert kept.float().mean().item() == pytest.approx(theirs[p])
    assert 0 < min(theirs.values()) < max(theirs.values()) < 1  # a curve, not a constant


class Quadrant(nn.Module):
    """Two logits, +-4 times the mean of the top-left quadrant: its only evidence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = x[:, :, : h // 2, : w // 2].mean((1, 2, 3))
        return torch.stack((4 * m, -4 * m), 1)


@pytest.fixture(scope="module")
def quadrant_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    n, size = 16, 24
    sign = torch.tensor([1.0, -1.0]).repeat(n // 2)
    images = 0.5 * torch.randn(n, 3, size, size, generator=g)
    images[:, :, : size // 2, : size // 2] += sign[:, None, None, None]
    labels = (sign < 0).long()
    indicator = torch.zeros(n, size, size)
    indicator[:, : size // 2, : size // 2] = 1.0
    maps = {
        "indicator": indicator,
        "complement": 1 - indicator,
        "dead": torch.zeros(n, size, size),
        "coarse_indicator": indicator[:, ::4, ::4].clone(),  # 6 x 6, upsampled
    }
    return Quadrant(), images, labels, maps


def test_a_map_of_the_evidence_is_faithful_and_its_complement_or_a_dead_map_is_not(
    quadrant_case,
):
    model, images, labels, maps = quadrant_case
    results = faithfulness(model, images, labels, maps, seed=0)
    assert results["indicator"].faithful and results["indicator"].p < 0.05
    assert results["indicator"].difference > 0.1 and results["indicator"].ci_low > 0
    assert results["coarse_indicator"].faithful
    assert not results["complement"].faithful and results["complement"].difference < 0
    assert not results["dead"].faithful and results["dead"].difference == 0.0
    assert results["indicator"].n == 16 and results["indicator"].seconds > 0


def test_the_same_seed_gives_the_same_result_and_another_seed_another(quadrant_case):
    model, images, labels, maps = quadrant_case
    subset = {"indicator": maps["indicator"][:6], "dead": maps["dead"][:6]}
    runs = [
        faithfulness(model, images[:6], labels[:6], subset, seed=s, fractions=(0.3, 0.7))
        for s in (3, 3, 4)
    ]
    values = [{k: {**v.to_dict(), "seconds": None} for k, v in run.items()} for run in runs]
    assert values[0] == values[1] != values[2]


def test_road_is_batch_independent_without_noise_and_maps_are_upsampled(quadrant_case):
    model, images, labels, _ = quadrant_case
    g = torch.Generator().manual_seed(7)
    coarse = torch.rand(4, 6, 6, generator=g)
    full = F.interpolate(coarse[:, None], size=(24, 24), mode="bilinear")[:, 0]
    together = road(model, images[:4], labels[:4], coarse, noise=0.0)
    alone = road(model, images[1:2], labels[1:2], full[1:2], noise=0.0)
    assert together[1].item() == pytest.approx(alone.item(), abs=1e-5)


class ModeRecorder(nn.Module):
    """Passes its input on and notes the mode of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x


def test_road_runs_in_eval_mode_restores_the_mode_and_writes_no_gradient():
    recorder = ModeRecorder()
    model = nn.Sequential(recorder, Sharp()).train()
    images = torch.randn(2, 3, 8, 8)
    road(model, images, torch.tensor([0, 1]), torch.rand(2, 8, 8), fractions=(0.5,))
    assert recorder.modes == [False] * 3  # before, MoRF, LeRF
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_pixels_are_ranked_by_value_then_by_the_tie_key():
    maps = torch.tensor([[3.0, 1.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    ties = torch.tensor([[0.0, 0.9, 0.0, 0.1], [0.4, 0.3, 0.2, 0.1]])
    assert _ranks(maps, ties).tolist() == [[3, 1, 2, 0], [3, 2, 1, 0]]


def test_a_dead_map_scores_exactly_the_random_map_and_ties_follow_the_generator(quadrant_case):
    model, images, labels, maps = quadrant_case
    result = faithfulness(model, images[:4], labels[:4], {"dead": maps["dead"][:4]}, seed=1,
                          fractions=(0.5,))["dead"]  # fmt: skip
    assert result.difference == 0.0 and result.p == 1.0 and not result.faithful
    args = (model, images[:2], labels[:2], maps["dead"][:2])
    first = road(*args, fractions=(0.5,), generator=torch.Generator().manual_seed(0))
    again = road(*args, fractions=(0.5,), generator=torch.Generator().manual_seed(0))
    other = road(*args, fractions=(0.5,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_to_dict_is_json_safe_with_one_image():
    model = Sharp().eval()
    result = faithfulness(model, torch.randn(1, 3, 8, 8), torch.tensor([0]),
                          {"m": torch.rand(1, 8, 8)}, seed=0, fractions=(0.5,))  # fmt: skip
    record = result["m"].to_dict()
    json.dumps(record, allow_nan=False)
    assert record["p"] is None and record["ci95"] == [None, None] and record["faithful"] is False
    assert isinstance(result["m"], Faithfulness)
    empty = faithfulness(model, torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long),
                         {"m": torch.zeros(0, 8, 8)}, seed=0)["m"]  # fmt: skip
    assert empty.n == 0 and not empty.faithful and empty.to_dict()["road"] is None


def test_bad_inputs_raise_named_errors():
    model = Sharp().eval()
    images, labels = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    with pytest.raises(DataError, match="maps Tensor"):
        road(model, images, labels, torch.rand(3, 8, 8))
    with pytest.raises(AttributionError, match="finite"):
        road(model, images, labels, torch.full((2, 8, 8), float("nan")))
    with pytest.raises(ConfigError, match="fractions"):
        road(model, images, labels, torch.rand(2, 8, 8), fractions=(0.0, 0.5))
    with pytest.raises(ConfigError, match="alpha"):
        faithfulness(model, images, labels, {}, seed=0, alpha=1.5)
    with pytest.raises(DataError, match="ties"):
        road(model, images, labels, torch.rand(2, 8, 8), ties=torch.rand(2, 4, 4))
    with pytest.raises(DataError, match="removed"):
        impute(images, torch.zeros(2, 4, 4, dtype=torch.bool))


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_imputation_on_cuda_matches_the_cpu_with_the_same_noise():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 40, 40, generator=g)
    removed = torch.rand(4, 40, 40, generator=g) < 0.8
    cpu = impute(images, removed, generator=torch.Generator().manual_seed(1))
    gpu = impute(images.cuda(), removed.cuda(), generator=torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda" and (gpu.cpu() - cpu).abs().max() < 1e-4
