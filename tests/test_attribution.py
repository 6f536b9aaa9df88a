import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam, Saliency

from auditor.attribution import attribute, compute
from auditor.errors import AttributionError
from auditor.models import resolve_target_layer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_saliency_matches_captum(tiny_cnn):
    inputs = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 1])
    ours = attribute(tiny_cnn, inputs, targets, methods=("saliency",))["saliency"]
    theirs = Saliency(tiny_cnn).attribute(inputs, target=targets, abs=True).amax(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("arch,layer", [("resnet18", "layer4"), ("vgg11_bn", "features")])
def test_gradcam_matches_captum_on_torchvision(arch, layer):
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=5).eval()
    inputs = torch.randn(2, 3, 64, 64)
    targets = torch.tensor([1, 3])
    module = dict(model.named_modules())[layer]
    ours = attribute(model, inputs, targets, methods=("gradcam",), target_layer=module)["gradcam"]
    cam = LayerGradCam(model, module).attribute(inputs, target=targets, relu_attributions=True)
    theirs = LayerAttribution.interpolate(cam, (64, 64), interpolate_mode="bilinear")[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_gradcam_golden_value_on_hand_set_model():
    """One conv channel copies the input's red channel; the linear head weighs it by 2, so the
    gradient per cell is 2/(h*w), the weight is 2/16, and Grad-CAM is relu(2/16 * red)."""
    conv = torch.nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
    head = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(2.0)
    model = torch.nn.Sequential(conv, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head)
    red = torch.tensor([[1.0, -1.0, 0.0, 2.0]] * 4)
    inputs = torch.stack([red, torch.zeros(4, 4), torch.zeros(4, 4)])[None]
    cam = attribute(model, inputs, [0], methods=("gradcam",), target_layer=conv)["gradcam"][0]
    expected = torch.tensor([[0.125, 0.0, 0.0, 0.25]] * 4)
    torch.testing.assert_close(cam, expected)


def test_batch_independence(tiny_cnn):
    inputs = torch.randn(6, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    layer = tiny_cnn.features
    full = attribute(tiny_cnn, inputs, targets, target_layer=layer)
    for method, maps in full.items():
        alone = attribute(tiny_cnn, inputs[3:4], targets[3:4], target_layer=layer)[method]
        torch.testing.assert_close(maps[3:4], alone, rtol=1e-5, atol=1e-7)


def test_hygiene_after_success_and_error(tiny_cnn):
    tiny_cnn.train()
    inputs = torch.randn(2, 3, 8, 8)
    attribute(tiny_cnn, inputs, [0, 1], target_layer=tiny_cnn.features)
    assert tiny_cnn.training
    assert all(p.grad is None for p in tiny_cnn.parameters())
    assert not tiny_cnn.features._forward_hooks
    with pytest.raises(AttributionError):
        attribute(tiny_cnn, inputs, [0, 7], target_layer=tiny_cnn.features)  # bad target
    assert tiny_cnn.training and not tiny_cnn.features._forward_hooks
    assert all(p.grad is None for p in tiny_cnn.parameters())


def test_compute_returns_logits_of_the_same_pass(tiny_cnn):
    inputs = torch.randn(3, 3, 8, 8)
    result = compute(tiny_cnn, inputs, [0, 1, 2], methods=("saliency",))
    torch.testing.assert_close(result.logits, tiny_cnn(inputs))


def test_target_layer_keeps_at_least_seven_cells():
    model = torchvision.models.resnet18(num_classes=3)
    assert resolve_target_layer(model, None, image_size=224).name == "layer4"
    small = resolve_target_layer(model, None, image_size=64)
    assert small.name == "layer2" and small.cells == (8, 8)
    assert resolve_target_layer(model, "layer3", image_size=64).cells == (4, 4)


class _HandSet(torch.nn.Module):
    """1x1 conv to channels (x, -x), a rectifier, GAP, and a linear head with rows
    (1, -2) and (0.5, 1). ``relu`` picks how the rectifier is called."""

    def __init__(self, relu: str) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1, bias=False)
        self.act = torch.nn.ReLU(inplace=relu == "module_inplace")
        self.fc = torch.nn.Linear(2, 2, bias=False)
        self.relu = relu
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.relu.startswith("module"):
            h = self.act(h)
        elif self.relu == "F.relu":
            h = torch.nn.functional.relu(h)
        elif self.relu == "F.relu_inplace":
            h = torch.nn.functional.relu(h, inplace=True)
        elif self.relu == "torch.relu_":
            h = torch.relu_(h)
        elif self.relu == "torch.relu":
            h = torch.relu(h)
        elif self.relu == "Tensor.relu":
            h = h.relu()
        else:
            h = h.relu_()
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


HAND_INPUT = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
# Class 0 by hand: the rectified channels are r1 = relu(x), r2 = relu(-x); dscore/dr is
# (1/4, -2/4) per cell, so the plain gradient is 1/4 where x > 0 and (-1/2)(-1) where x < 0.
GOLDEN = {
    "saliency": [[0.25, 0.5], [0.25, 0.25]],
    "gradient_x_input": [[0.25, 1.0], [0.75, 0.125]],  # |x * g|
    "guided_backprop": [[0.25, 0.0], [0.25, 0.25]],  # the negative -1/2 is cut
    "deconvnet": [[0.25, 0.25], [0.25, 0.25]],  # relu(1/4) through r1 everywhere
    "gradcam": [[0.25, 0.0], [0.75, 0.125]],  # relu(r1/4 - r2/2)
    "gradcam_pp": [[0.32, 0.0], [0.96, 0.16]],  # alpha = 1/(2 + 4.5/4); w1 = 4 alpha / 4
    "layercam": [[0.25, 0.0], [0.75, 0.125]],  # relu(g) * A
    "guided_gradcam": [[0.0625, 0.0], [0.1875, 0.03125]],
    "cam": [[1.0, 0.0], [3.0, 0.5]],  # relu(r1 - 2 r2)
    "integrated_gradients": [[0.25, 1.0], [0.75, 0.125]],  # one linear piece: x * g
}


@pytest.mark.parametrize(
    "relu",
    [
        "module",
        "module_inplace",
        "F.relu",
        "F.relu_inplace",
        "torch.relu",
        "torch.relu_",
        "Tensor.relu",
        "relu_",
    ],
)
def test_golden_values_on_a_hand_set_model(relu):
    """Every rectifier call style gives the same maps; with a functional rectifier there is no
    module to take as the CAM layer, so the layer methods are checked on the module variants."""
    model = _HandSet(relu).eval()
    functional = not relu.startswith("module")
    layered = {"gradcam", "gradcam_pp", "layercam", "guided_gradcam"}
    methods = tuple(m for m in GOLDEN if not (functional and m in layered))
    layer = None if functional else model.act
    maps = attribute(model, HAND_INPUT, [0], methods=methods, target_layer=layer)
    for method in methods:
        torch.testing.assert_close(maps[method][0], torch.tensor(GOLDEN[method]), msg=method)


@pytest.mark.parametrize("base", ["saliency", "guided_backprop", "deconvnet"])
def test_smoothgrad_with_small_noise_keeps_a_piecewise_linear_models_map(base):
    """Noise of 0.01 never flips a unit of the hand-set model, whose gradient is then constant,
    so SmoothGrad around each base method equals that method's golden map."""
    model = _HandSet("module").eval()
    options = {"smoothgrad": {"base": base, "sigma": 0.01, "samples": 5, "max_batch": 2}}
    found = attribute(model, HAND_INPUT, [0], methods=("smoothgrad",), options=options)
    torch.testing.assert_close(found["smoothgrad"][0], torch.tensor(GOLDEN[base]))


def test_integrated_gradients_trapezoid_with_a_baseline_matches_captum(tiny_cnn):
    """Captum's trapezoid puts n points 1/(n-1) apart but weighs them by 1/n (ends halved), so
    its weights sum to (n-1)/n; ours sum to 1, so the reference is scaled by n/(n-1)."""
    from captum.attr import IntegratedGradients

    inputs = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    baseline = torch.full((1, 3, 8, 8), 0.25)
    options = {
        "integrated_gradients": {
            "steps": 6,
            "quadrature": "riemann_trapezoid",
            "baseline": baseline,
            "reduce": "channels",
            "max_batch": 5,
        }
    }
    ours = attribute(
        tiny_cnn, inputs, [0, 1, 2], methods=("integrated_gradients",), options=options
    )
    theirs = IntegratedGradients(tiny_cnn).attribute(
        inputs,
        baselines=baseline.expand_as(inputs),
        target=[0, 1, 2],
        n_steps=6,
        method="riemann_trapezoid",
    )
    torch.testing.assert_close(ours["integrated_gradients"], theirs * 6 / 5, rtol=1e-4, atol=1e-7)


def test_label_and_prediction_in_one_call_share_the_forward(tiny_cnn):
    from auditor.attribution import attribute_many

    inputs = torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 1, 2, 0])
    methods = ("saliency", "guided_backprop", "deconvnet", "gradcam", "cam", "guided_gradcam")
    forwards = []
    handle = tiny_cnn.register_forward_hook(lambda *_: forwards.append(1))
    try:
        both = attribute_many(tiny_cnn, inputs, {"label": labels, "prediction": "prediction"},
                              methods=methods, target_layer=tiny_cnn.features)  # fmt: skip
    finally:
        handle.remove()
    assert len(forwards) == 1
    predicted = tiny_cnn(inputs).argmax(1)
    for name, targets in (("label", labels), ("prediction", predicted)):
        alone = attribute(
            tiny_cnn, inputs, targets, methods=methods, target_layer=tiny_cnn.features
        )
        for method in methods:
            torch.testing.assert_close(both[name][method], alone[method])
    assert all(p.grad is None for p in tiny_cnn.parameters())
