import math

import torch
from scipy.stats import spearmanr

from auditor.detect.sanity import (
    randomization_check,
    randomized_copy,
    resolution_check,
    spearman,
)
from auditor.models import resolve_target_layer
from auditor.scoring import average_ranks


def test_spearman_matches_scipy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 50, generator=g), torch.rand(3, 50, generator=g)
    b[1] = a[1] * 2 + 1  # monotone: correlation 1
    ours = spearman(a, b)
    for i in range(3):
        assert math.isclose(float(ours[i]), spearmanr(a[i], b[i]).statistic, abs_tol=1e-6)
    assert math.isclose(float(ours[1]), 1.0, abs_tol=1e-6)


def test_spearman_ranks_ties_as_scipy_does_and_constant_maps_are_undefined():
    g = torch.Generator().manual_seed(1)
    # sparse CAM-like maps: most cells 0 after the ReLU, unrelated to each other
    a = (torch.rand(200, 49, generator=g) - 0.8).clamp_min(0)
    b = (torch.rand(200, 49, generator=g) - 0.8).clamp_min(0)
    ours = spearman(a, b)
    theirs = torch.tensor([spearmanr(a[i], b[i]).statistic for i in range(200)])
    assert torch.allclose(ours.double(), theirs.double(), atol=1e-6)
    assert abs(float(ours.mean())) < 0.05  # argsort-of-argsort ranks gave about 0.3 here
    a[0], b[1] = 0.0, 1.0  # an all-zero map, a constant one
    both = spearman(a, b)
    assert torch.isnan(both[:2]).all() and not torch.isnan(both[2:]).any()
    ties = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0]])
    assert average_ranks(ties).tolist() == [[4.0, 0.5, 4.0, 2.0, 0.5, 4.0]]


def test_resolution_check_only_concerns_coarse_cams():
    coarse = resolution_check(["gradcam", "saliency"], cells=(2, 2), image_size=64, object_side=12)
    assert set(coarse) == {"gradcam"} and "32 px" in coarse["gradcam"]
    assert resolution_check(["gradcam"], cells=(8, 8), image_size=64, object_side=12) == {}
    assert resolution_check(["saliency"], cells=None, image_size=64, object_side=12) == {}


def test_randomized_copy_leaves_model_and_global_rng_alone(tiny_cnn):
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    rng = torch.random.get_rng_state()
    clone = randomized_copy(tiny_cnn, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())
    assert not torch.equal(clone.fc.weight, tiny_cnn.fc.weight)


def test_randomization_check_reports_every_method(tiny_cnn):
    inputs = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    similarity, failed = randomization_check(
        tiny_cnn, inputs, torch.tensor([0, 1, 2, 0]), ("gradcam", "saliency"),
        target_layer=resolve_target_layer(tiny_cnn, "features", image_size=12),
        max_similarity=0.5,
    )  # fmt: skip
    assert set(similarity) == {"gradcam", "saliency"}
    assert all(-1 <= s <= 1 for s in similarity.values())
    assert set(failed) == {m for m, s in similarity.items() if s > 0.5}


class FixedEdges(torch.nn.Module):
    """One fixed (unlearned) edge filter, then a linear head: its saliency shows the image's
    edges whatever the head's weights are, the case the check exists for (Adebayo et al.)."""

    def __init__(self) -> None:
        super().__init__()
        kernel = torch.tensor([[-1.0, 0.0, 1.0]] * 3).expand(1, 3, 3, 3).contiguous()
        self.register_buffer("kernel", kernel)
        self.fc = torch.nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edges = torch.nn.functional.conv2d(x, self.kernel, padding=1).relu()
        return self.fc(edges.mean(dim=(2, 3)))


def test_randomization_check_fails_maps_that_ignore_the_weights():
    torch.manual_seed(0)
    inputs = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2, 0])
    similarity, failed = randomization_check(
        FixedEdges(), inputs, targets, ("saliency",), target_layer=None, max_similarity=0.5
    )
    assert similarity["saliency"] > 0.99 and "saliency" in failed
