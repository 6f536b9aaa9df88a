"""The engine's contract: pass counts, hygiene, batch independence, options and targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auditor.attribution import (
    CAM_METHODS,
    EAGER_METHODS,
    METHODS,
    REGISTRY,
    FusedPass,
    LayerFilter,
    MethodSpec,
    attribute,
    attribute_many,
    compute,
)
from auditor.attribution.options import SMOOTH_BASES
from auditor.errors import AttributionError

SEED_METHODS = ("saliency", "deconvnet", "guided_backprop", "cam", "gradcam", "guided_gradcam")
FAST = {"smoothgrad": {"samples": 3}, "integrated_gradients": {"steps": 4}}


pytestmark = pytest.mark.usefixtures("one_thread")


class _Mixed(nn.Module):
    """ReLU as a reused in-place module and as a functional call; raises on request."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x))
        if self.fail:
            raise RuntimeError("injected")
        h = torch.nn.functional.relu(self.norm(self.act(self.conv2(h))))
        return self.fc(h.mean(dim=(2, 3)))


@pytest.fixture
def mixed() -> _Mixed:
    torch.manual_seed(3)
    return _Mixed().eval()


def _inputs(n: int = 4, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def _state(model: nn.Module) -> list[tuple[str, int, bool, int]]:
    """(name, module id, training, hook count) of every module."""
    return [
        (
            name,
            id(m),
            m.training,
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks),
        )
        for name, m in model.named_modules()
    ]


def _assert_clean(model: nn.Module, before: list) -> None:
    assert _state(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("error", [None, "forward", "target", "rule"])
def test_hygiene_after_success_and_injected_errors(mixed, error):
    mixed.train()
    mixed.norm.eval()  # a mixed state must come back as it was
    before = _state(mixed)
    inputs, targets = _inputs(), [0, 1, 2, 0]
    methods, layer = METHODS, mixed.conv2
    if error == "forward":
        mixed.fail = True
    elif error == "target":
        targets = [0, 1, 2, 9]
    elif error == "rule":
        mixed.act, methods = nn.Identity(), ("saliency", "guided_backprop")
        mixed.forward = lambda x: mixed.fc(mixed.conv2(mixed.conv1(x)).mean(dim=(2, 3)))
        before = _state(mixed)
    if error is None:
        attribute(mixed, inputs, targets, methods=methods, target_layer=layer, options=FAST)
    else:
        with pytest.raises((AttributionError, RuntimeError)):
            attribute(mixed, inputs, targets, methods=methods, target_layer=layer, options=FAST)
    _assert_clean(mixed, before)


def test_six_seed_methods_cost_one_forward_and_three_backwards(mixed, monkeypatch):
    forwards, backwards = [], []
    mixed.register_forward_pre_hook(lambda *_: forwards.append(1))
    grad = torch.autograd.grad

    def counting(*args, **kwargs):
        backwards.append(1)
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    attribute(mixed, _inputs(), [0, 1, 2, 0], methods=SEED_METHODS, target_layer=mixed.conv2)
    assert (len(forwards), len(backwards)) == (1, 3)
    backwards.clear()
    attribute(
        mixed, _inputs(), [0, 1, 2, 0], methods=("saliency", "gradcam"), target_layer=mixed.conv2
    )
    assert len(backwards) == 1


def test_batch_independence_of_every_method(mixed):
    inputs, targets = _inputs(5), torch.tensor([0, 1, 2, 0, 1])
    full = attribute(
        mixed, inputs, targets, methods=METHODS, target_layer=mixed.conv2, options=FAST
    )
    part = attribute(
        mixed, inputs[2:4], targets[2:4], methods=METHODS, target_layer=mixed.conv2, options=FAST
    )
    for method in METHODS:
        torch.testing.assert_close(full[method][2:4], part[method], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maps_are_float32_non_negative_at_input_size(mixed, dtype):
    model, inputs = mixed.to(dtype), _inputs().to(dtype)
    maps = attribute(
        model, inputs, [0, 1, 2, 0], methods=METHODS, target_layer=model.conv2, options=FAST
    )
    assert list(maps) == list(METHODS)
    for method, found in maps.items():
        assert found.dtype == torch.float32 and found.shape == (4, 8, 8), method
        assert bool((found >= 0).all()), method


def test_reductions_keep_one_channel_map(mixed):
    inputs, targets = _inputs(), [0, 1, 2, 0]
    options = {"saliency": {"reduce": "channels"}}
    channels = attribute(mixed, inputs, targets, methods=("saliency",), options=options)["saliency"]
    signed = attribute(
        mixed, inputs, targets, methods=("saliency",), options={"saliency": {"reduce": "signed"}}
    )["saliency"]
    default = attribute(mixed, inputs, targets, methods=("saliency",))["saliency"]
    assert channels.shape == (4, 3, 8, 8)
    torch.testing.assert_close(default, channels.abs().amax(dim=1))
    torch.testing.assert_close(signed.abs(), default)
    assert bool((signed < 0).any())


@pytest.mark.parametrize(
    "options,match",
    [
        ({"saliency": {"reduce": "mean"}}, "reduce"),
        ({"saliency": {"samples": 3}}, "Unknown option"),
        ({"gradcam": {"reduce": "signed"}}, "no options"),
        ({"smoothgrad": {"samples": 3}}, "not among"),
        ({"integrated_gradients": {"steps": 0}}, "positive"),
    ],
)
def test_bad_options_are_rejected(mixed, options, match):
    methods = ("saliency", "gradcam", "integrated_gradients")
    with pytest.raises(AttributionError, match=match):
        attribute(
            mixed, _inputs(), [0] * 4, methods=methods, target_layer=mixed.conv2, options=options
        )


def test_without_a_layer_the_api_chooses_the_clis_and_says_which(mixed):
    import torchvision

    from auditor.models import resolve_target_layer

    maps = attribute(mixed, _inputs(), [0] * 4, methods=("layercam", "saliency"))
    chosen = resolve_target_layer(mixed, None, image_size=8)
    assert maps.target_layer is not None and maps.target_layer.automatic
    assert maps.target_layer.name == chosen.name and maps.target_layer.module is chosen.module
    given = attribute(mixed, _inputs(), [0] * 4, methods=("layercam",), target_layer=chosen.module)
    assert torch.equal(maps["layercam"], given["layercam"]) and not given.target_layer.automatic
    assert attribute(mixed, _inputs(), [0] * 4, methods=("saliency",)).target_layer is None
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=3).eval()
    both = attribute_many(resnet, torch.randn(2, 3, 64, 64), {"label": [0, 1]},
                          methods=("gradcam",))  # fmt: skip
    assert both["label"].target_layer.name == "layer2"  # 8x8 cells; layer4 has 2x2 at 64 px


def test_the_automatic_layer_is_resolved_once_per_model_and_input_size(monkeypatch):
    """A loop over batches pays for the layer search once: later calls on the same model
    and input size reuse it, say so, and give the same maps; another size searches again."""
    import copy

    import torchvision

    from auditor.attribution import engine

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=3).eval()
    calls = []
    search = engine.resolve_target_layer
    monkeypatch.setattr(
        engine, "resolve_target_layer", lambda *a, **k: calls.append(1) or search(*a, **k)
    )
    batch = torch.randn(2, 3, 64, 64)
    first = attribute(resnet, batch, [0, 1], methods=("gradcam",))
    again = attribute(resnet, batch, [0, 1], methods=("gradcam",))
    assert (first.layer_reused, again.layer_reused, len(calls)) == (False, True, 1)
    assert again.target_layer == first.target_layer
    assert torch.equal(first["gradcam"], again["gradcam"])
    larger = attribute(resnet, torch.randn(2, 3, 128, 128), [0, 1], methods=("gradcam",))
    assert (larger.layer_reused, larger.target_layer.name, len(calls)) == (False, "layer3", 2)
    resnet.layer2 = copy.deepcopy(resnet.layer2)  # the reused layer left the model: search again
    assert not attribute(resnet, batch, [0, 1], methods=("gradcam",)).layer_reused
    no_map = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    with pytest.raises(AttributionError, match="gradcam: No spatial feature map"):
        attribute(no_map, _inputs(), [0] * 4, methods=("gradcam",))


def test_cam_needs_a_gap_linear_head(mixed):
    flat_head = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    with pytest.raises(AttributionError, match="global average pooling"):
        attribute(flat_head, _inputs(), [0] * 4, methods=("cam",))


def test_empty_batch_gives_empty_maps(mixed):
    maps = attribute(
        mixed, _inputs()[:0], [], methods=("saliency", "gradcam"), target_layer=mixed.conv2
    )
    assert all(m.shape == (0, 8, 8) for m in maps.values())


def _signed(model: nn.Module, inputs: torch.Tensor, targets: object) -> torch.Tensor:
    options = {"saliency": {"reduce": "channels"}}
    return attribute(model, inputs, targets, methods=("saliency",), options=options)["saliency"]


def test_prediction_and_class_index_targets_agree(mixed):
    inputs = _inputs()
    predicted = compute(mixed, inputs, "prediction", methods=("saliency",))
    by_index = attribute(mixed, inputs, predicted.logits.argmax(1), methods=("saliency",))
    torch.testing.assert_close(predicted.maps["saliency"], by_index["saliency"])


def test_multi_label_sets_sum_the_selected_classes(mixed):
    inputs = _inputs(2)
    sets = _signed(mixed, inputs, [[0, 2], [1]])
    mask = _signed(mixed, inputs, torch.tensor([[1, 0, 1], [0, 1, 0]]))
    g0, g1, g2 = (_signed(mixed, inputs, [k, k]) for k in range(3))
    torch.testing.assert_close(sets, mask)
    torch.testing.assert_close(sets[0], g0[0] + g2[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sets[1], g1[1])


def test_callable_target_turns_logits_into_scores(mixed):
    inputs = _inputs(2)
    margin = _signed(mixed, inputs, lambda logits: logits[:, 1] - logits[:, 0])
    g0, g1 = _signed(mixed, inputs, [0, 0]), _signed(mixed, inputs, [1, 1])
    torch.testing.assert_close(margin, g1 - g0, rtol=1e-5, atol=1e-7)
    with pytest.raises(AttributionError, match="Tensor"):
        _signed(mixed, inputs, lambda logits: logits)


def test_regression_modifiers(mixed):
    """A one-output regression: what increases (relu), decreases (negate), changes (absolute)
    or keeps (small_values) the output, from the same signed gradient."""
    regression = nn.Sequential(mixed, nn.Linear(3, 1)).eval()
    inputs = _inputs(2)
    signed = _signed(regression, inputs, [0, 0])

    def modified(modifier: str) -> torch.Tensor:
        options = {"saliency": {"modifier": modifier, "reduce": "channels"}}
        return attribute(regression, inputs, [0, 0], methods=("saliency",), options=options)[
            "saliency"
        ]

    torch.testing.assert_close(modified("relu"), signed.clamp(min=0))
    torch.testing.assert_close(modified("negate"), (-signed).clamp(min=0))
    torch.testing.assert_close(modified("absolute"), signed.abs())
    torch.testing.assert_close(modified("small_values"), 1 / (signed.abs() + 1e-7))


def test_layer_filter_target_is_conv_filter_saliency(mixed):
    inputs = _inputs(2)
    found = _signed(mixed, inputs, LayerFilter(mixed.conv2, 3))
    leaf = inputs.clone().requires_grad_(True)
    h = mixed.conv1(leaf).relu()
    (expected,) = torch.autograd.grad(mixed.conv2(h)[:, 3].mean(dim=(1, 2)).sum(), leaf)
    torch.testing.assert_close(found, expected)
    per_sample = _signed(mixed, inputs, LayerFilter(mixed.conv2, torch.tensor([3, 3])))
    torch.testing.assert_close(per_sample, found)


def test_works_inside_no_grad_and_leaves_the_inputs_alone(mixed):
    inputs = _inputs()
    kept = inputs.clone()
    expected = attribute(
        mixed, inputs, [0, 1, 2, 0], methods=SEED_METHODS, target_layer=mixed.conv2
    )
    with torch.no_grad():
        found = attribute(
            mixed, inputs, [0, 1, 2, 0], methods=SEED_METHODS, target_layer=mixed.conv2
        )
    for method in SEED_METHODS:
        torch.testing.assert_close(found[method], expected[method])
    torch.testing.assert_close(inputs, kept, rtol=0, atol=0)
    assert not inputs.requires_grad


def test_a_new_method_is_one_registry_entry_and_its_finisher(mixed, monkeypatch):
    """A toy method on an extended copy of the registry: it shares saliency's backward, and
    the built-in registry does not learn of it."""

    def squared_gradient(fused: FusedPass, _settings: None) -> torch.Tensor:
        return fused.gradients[("plain", "input")].pow(2).sum(dim=1)

    registry = REGISTRY.extended(
        MethodSpec("squared_gradient", squared_gradient, needs=(("plain", "input"),))
    )
    backwards, grad = [], torch.autograd.grad

    def counting(*args, **kwargs):
        backwards.append(1)
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    inputs, methods = _inputs(), ("squared_gradient", "saliency")
    found = compute(mixed, inputs, [0, 1, 2, 0], methods=methods, registry=registry)
    assert list(found.maps) == list(methods) and len(backwards) == 1
    signed = _signed(mixed, inputs, [0, 1, 2, 0])
    torch.testing.assert_close(found.maps["squared_gradient"], signed.pow(2).sum(dim=1))
    assert "squared_gradient" not in REGISTRY and "squared_gradient" not in METHODS
    with pytest.raises(AttributionError, match=r"from \[.*'squared_gradient'\], got \['toy'\]"):
        compute(mixed, inputs, [0] * 4, methods=("toy",), registry=registry)
    with pytest.raises(AttributionError, match=r"from \['gradcam', .*\], got \['squared_gra"):
        compute(mixed, inputs, [0] * 4, methods=("squared_gradient",))
    with pytest.raises(AttributionError, match=r"Expected a method from \['gradcam', .*'toy'"):
        REGISTRY.get("toy")
    with pytest.raises(AttributionError, match="two for 'saliency'"):
        REGISTRY.extended(MethodSpec("saliency", squared_gradient))


def test_method_lists_are_read_off_the_registry():
    assert METHODS == (
        "gradcam",
        "saliency",
        "gradient_x_input",
        "deconvnet",
        "guided_backprop",
        "cam",
        "gradcam_pp",
        "layercam",
        "guided_gradcam",
        "smoothgrad",
        "integrated_gradients",
    )
    assert sorted(CAM_METHODS) == ["gradcam", "gradcam_pp", "guided_gradcam", "layercam"]
    assert sorted(EAGER_METHODS - CAM_METHODS) == ["cam", "deconvnet", "guided_backprop"]
    assert {spec.name for spec in REGISTRY if spec.channel is not None} == set(SMOOTH_BASES)


def test_guided_methods_on_other_nonlinearities_are_reported_partial():
    import torchvision

    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    mobile = torchvision.models.mobilenet_v3_small(num_classes=3).eval()
    maps = attribute(mobile, x, [0], methods=("saliency", "guided_backprop", "deconvnet"))
    assert set(maps.partial) == {"guided_backprop", "deconvnet"}
    reason = maps.partial["guided_backprop"]
    assert "Hardswish x" in reason and "passed the plain gradient" in reason
    resnet = torchvision.models.resnet18(num_classes=3).eval()
    assert attribute(resnet, x, [0], methods=("guided_backprop",)).partial == {}


def test_bf16_autocast_keeps_the_maps_of_fp32(tiny_cnn):
    """Mixed precision for the forward pass only: maps stay float32 and rank the pixels as
    the float32 pass does (CPU bfloat16 autocast, random weights: Spearman 0.99-1.00 per
    image, Grad-CAM's worst 0.99; a random resnet18 is less stable, 0.95 at worst, its
    Grad-CAM weights being near-cancelling sums)."""
    from auditor.attribution.engine import compute
    from auditor.detect.sanity import spearman

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    layer = [m for m in tiny_cnn.modules() if isinstance(m, nn.Conv2d)][-1]
    targets = [0, 1, 2, 0, 1, 2, 0, 1]
    methods = ("gradcam", "saliency")
    full = compute(tiny_cnn, x, targets, methods=methods, target_layer=layer)
    half = compute(tiny_cnn, x, targets, methods=methods, target_layer=layer, precision="bf16")
    assert half.logits.dtype == torch.float32
    for method in methods:
        assert half.maps[method].dtype == torch.float32
        assert not torch.equal(half.maps[method], full.maps[method])  # bf16 really ran
        similarity = spearman(full.maps[method].flatten(1), half.maps[method].flatten(1))
        assert similarity.median() >= 0.99 and (similarity >= 0.98).all(), (method, similarity)


class _SharedActivation(nn.Module):
    """EfficientNet-Lite's pattern: one activation module at the stem and after the head's
    batch norm, and a padding module in front of a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU()
        self.pad = nn.ZeroPad2d(1)
        self.head = nn.Conv2d(8, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.head(self.pad(self.act(self.stem(x))))))
        return self.fc(x.mean((2, 3)))


def test_the_automatic_layer_is_never_a_reused_module_or_a_padding_layer():
    """The shared activation finishes last, but a hook on it would keep whichever call ran
    last; the padding layer's grid has a border the image lacks. Both stay nameable."""
    from auditor.models import resolve_target_layer

    model = _SharedActivation().eval()
    assert resolve_target_layer(model, None, image_size=16).name == "bn"
    assert resolve_target_layer(model, "pad", image_size=16).cells == (18, 18)
