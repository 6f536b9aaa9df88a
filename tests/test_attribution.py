import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam, Saliency

from auditor.attribution import attribute, compute
from auditor.errors import AttributionError
from auditor.models import resolve_target_layer


def test_saliency_matches_captum(tiny_cnn):
    inputs = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 1])
    ours = attribute(tiny_cnn, inputs, targets, methods=("saliency",))["saliency"]
    theirs = Saliency(tiny_cnn).attribute(inputs, target=targets, abs=True).amax(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)


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
