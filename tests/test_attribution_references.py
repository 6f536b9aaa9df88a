"""The engine against reference implementations on torchvision models with random weights.

Captum and pytorch-grad-cam are test-only references. Where a reference is wrong for a model
(Captum treats functional ``F.relu`` and ``nn.ReLU6`` as linear), a slow reference written
here is used instead, and the test says so.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchcam.methods import CAM as TorchCAM

from auditor.attribution import attribute
from auditor.attribution.cam import upsample
from auditor.errors import AttributionError, ModelError
from auditor.models import resolve_target_layer

SIZE = 64
ARCHS = {
    "resnet18": "layer4",
    "vgg11_bn": "features",
    "mobilenet_v2": "features",
    "efficientnet_b0": "features",
}
INPUT_METHODS = ("saliency", "gradient_x_input", "deconvnet", "guided_backprop")
CHANNELS = {"reduce": "channels"}


pytestmark = pytest.mark.usefixtures("one_thread")


def close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-4) -> None:
    """Relative error <= rtol, measured against the reference map's largest magnitude."""
    theirs = theirs.detach().to(ours)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * float(theirs.abs().max()))


@pytest.fixture(scope="module", params=list(ARCHS))
def zoo(request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """(model, target layer, inputs Tensor[2, 3, 64, 64], targets) with random weights."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(request.param, weights=None, num_classes=5).eval()
    layer = dict(model.named_modules())[ARCHS[request.param]]
    inputs = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return model, layer, inputs, torch.tensor([1, 3])


def _has_relu(model: nn.Module) -> bool:
    return any(isinstance(m, nn.ReLU) for m in model.modules())


@pytest.mark.slow
def test_plain_gradient_methods_match_captum(zoo):
    model, layer, inputs, targets = zoo
    methods = ("saliency", "gradient_x_input", "gradcam", "integrated_gradients")
    options = {m: CHANNELS for m in methods if m != "gradcam"}
    options["integrated_gradients"] = {"reduce": "channels", "steps": 4}
    ours = attribute(model, inputs, targets, methods=methods, target_layer=layer, options=options)
    close(ours["saliency"], Saliency(model).attribute(inputs, target=targets, abs=False))
    close(ours["gradient_x_input"], InputXGradient(model).attribute(inputs, target=targets))
    theirs = IntegratedGradients(model).attribute(inputs, target=targets, n_steps=4)
    close(ours["integrated_gradients"], theirs)
    cam = LayerGradCam(model, layer).attribute(inputs, target=targets, relu_attributions=True)
    close(ours["gradcam"], LayerAttribution.interpolate(cam, (SIZE, SIZE), "bilinear")[:, 0])


def test_rectifier_methods_match_captum_where_it_sees_every_relu(zoo):
    model, layer, inputs, targets = zoo
    if any(isinstance(m, nn.ReLU6) for m in model.modules()):
        pytest.skip("Captum treats ReLU6 as linear; see the slow module-swap reference below.")
    if not _has_relu(model):  # efficientnet_b0 (SiLU): no rule to apply, so a clear error
        with pytest.raises(AttributionError, match="ReLU"):
            attribute(model, inputs, targets, methods=("guided_backprop",))
        return
    methods = ("deconvnet", "guided_backprop", "guided_gradcam")
    options = dict.fromkeys(methods, CHANNELS)
    ours = attribute(model, inputs, targets, methods=methods, target_layer=layer, options=options)
    close(ours["deconvnet"], Deconvolution(model).attribute(inputs, target=targets))
    close(ours["guided_backprop"], GuidedBackprop(model).attribute(inputs, target=targets))
    theirs = GuidedGradCam(model, layer).attribute(
        inputs, target=targets, interpolate_mode="bilinear"
    )
    close(ours["guided_gradcam"], theirs)


def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise(zoo):
    """Our noise is shared across the batch, so compare one sample at a time; Captum draws
    from the global generator in the same order as ours when both get the same seed."""
    model, _, inputs, targets = zoo
    settings = {"samples": 3, "sigma": 0.2, "seed": 7, "reduce": "channels"}
    ours = attribute(
        model, inputs, targets, methods=("smoothgrad",), options={"smoothgrad": settings}
    )
    tunnel = NoiseTunnel(Saliency(model))
    for i in range(len(inputs)):
        torch.manual_seed(7)
        theirs = tunnel.attribute(
            inputs[i : i + 1],
            target=targets[i : i + 1],
            nt_type="smoothgrad",
            nt_samples=3,
            stdevs=0.2,
            abs=False,
        )
        close(ours["smoothgrad"][i : i + 1], theirs)


def _grad_cam_raw(model: nn.Module, layer: nn.Module, inputs, targets) -> dict[str, torch.Tensor]:
    """pytorch-grad-cam's maps before it min-max normalises and resizes with cv2: each class's
    own ``get_cam_image`` on activations and gradients that its hooks recorded in one pass,
    then only the ReLU it applies.

    -> {method: Tensor[N, h, w]} at the layer's resolution
    """
    with GradCAM(model=model, target_layers=[layer]) as extractor:
        outputs = extractor.activations_and_grads(inputs)
        loss = sum(ClassifierOutputTarget(int(t))(o) for t, o in zip(targets, outputs))
        loss.backward()
        recorded = extractor.activations_and_grads
        activations = recorded.activations[0].numpy()
        gradients = recorded.gradients[0].numpy()
    model.zero_grad(set_to_none=True)
    maps = {}
    for method, kind in (
        ("gradcam", GradCAM),
        ("gradcam_pp", GradCAMPlusPlus),
        ("layercam", LayerCAM),
    ):
        with kind(model=model, target_layers=[layer]) as extractor:
            cam = extractor.get_cam_image(inputs, layer, None, activations, gradients, False)
        maps[method] = torch.from_numpy(np.maximum(cam, 0))
    return maps


@pytest.mark.slow
def test_cams_match_pytorch_grad_cam_before_its_normalisation(zoo):
    """Compared at the layer's resolution, upsampled by the same bilinear function, because
    pytorch-grad-cam min-max normalises and resizes with cv2. Grad-CAM++: pytorch-grad-cam adds
    eps=1e-6 to the denominator 2g^2 + sum(A) g^3, which we do not (it makes the map depend on
    the gradients' scale), so the logits are scaled by 1e4 here to make that eps negligible;
    Grad-CAM and LayerCAM are simply scaled by 1e4 on both sides."""
    model, layer, inputs, targets = zoo
    scaled = nn.Sequential(model, _Scale(1e4)).eval()
    methods = ("gradcam", "gradcam_pp", "layercam")
    ours = attribute(scaled, inputs, targets, methods=methods, target_layer=layer)
    theirs = _grad_cam_raw(scaled, layer, inputs, targets)
    for method in methods:
        close(ours[method], upsample(theirs[method], (SIZE, SIZE)))


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_cam_matches_torchcam_and_equals_gradcam_times_cells(zoo):
    """For a GAP + linear head, Grad-CAM at the pooled layer is CAM / (h * w)."""
    model, layer, inputs, targets = zoo
    if isinstance(model, torchvision.models.VGG):
        with pytest.raises(AttributionError, match="global average pooling"):
            attribute(model, inputs, targets, methods=("cam",))
        return
    fc = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    ours = attribute(model, inputs, targets, methods=("cam", "gradcam"), target_layer=layer)
    with TorchCAM(model, target_layer=layer, fc_layer=fc) as extractor:
        scores = model(inputs)
        (raw,) = extractor(targets.tolist(), scores, normalized=False)
    close(ours["cam"], upsample(torch.relu(raw), (SIZE, SIZE)))
    h, w = raw.shape[-2:]
    close(ours["gradcam"] * (h * w), ours["cam"])


class _DenseNetWithReLUModule(nn.Module):
    """A DenseNet with its one functional ``F.relu`` (in ``DenseNet.forward``) made an
    ``nn.ReLU`` module, so that Captum's module hooks see every rectifier."""

    def __init__(self, model: torchvision.models.DenseNet) -> None:
        super().__init__()
        self.features, self.classifier, self.relu = model.features, model.classifier, nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(self.relu(self.features(x)), 1)
        return self.classifier(pooled.flatten(1))


def test_functional_relu_in_densenet_against_captum_on_a_module_rewrite():
    """Captum on the original DenseNet silently skips the functional ReLU and so differs;
    our engine on the original matches Captum on the rewrite with an nn.ReLU module.
    densenet121 runs the same ``DenseNet.forward``; a narrow, shallow one keeps the test fast."""
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(8, (2, 2), 16, num_classes=4).eval()
    rewritten = _DenseNetWithReLUModule(model).eval()
    inputs, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    methods = ("deconvnet", "guided_backprop")
    ours = attribute(
        model, inputs, targets, methods=methods, options=dict.fromkeys(methods, CHANNELS)
    )
    for method, kind in (("deconvnet", Deconvolution), ("guided_backprop", GuidedBackprop)):
        close(ours[method], kind(rewritten).attribute(inputs, target=targets))
        silent = kind(model).attribute(inputs, target=targets)
        assert not torch.allclose(ours[method], silent, rtol=1e-3, atol=1e-6)


class _ReferenceRule(torch.autograd.Function):
    """clamp(x, 0, 6) with the guided or deconv backward, written out for the reference."""

    @staticmethod
    def forward(ctx, x, rule):  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.rule = rule
        return x.clamp(0, 6)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconv":
            return grad.clamp(min=0), None
        return grad.clamp(min=0) * ((x > 0) & (x < 6)).to(grad), None


class _ReferenceReLU6(nn.Module):
    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReferenceRule.apply(x, self.rule)


def _swap_relu6(model: nn.Module, rule: str) -> nn.Module:
    """A copy of ``model`` with every nn.ReLU6 replaced by the reference module."""
    copied = copy.deepcopy(model)
    for module in list(copied.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(module, name, _ReferenceReLU6(rule))
    return copied


@pytest.mark.parametrize("method,rule", [("guided_backprop", "guided"), ("deconvnet", "deconv")])
def test_relu6_in_mobilenet_v2_against_a_slow_module_swap_reference(method, rule):
    """Captum treats nn.ReLU6 as linear; our engine treats it as a rectifier. The reference
    swaps each nn.ReLU6 for a module with the rule written out."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=4, width_mult=0.25).eval()
    inputs, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    ours = attribute(model, inputs, targets, methods=(method,), options={method: CHANNELS})
    reference = _swap_relu6(model, rule)
    leaf = inputs.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad(reference(leaf).gather(1, targets[:, None]).sum(), leaf)
    close(ours[method], theirs)


def test_efficientnet_has_no_relu_so_rectifier_methods_raise():
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0(weights=None, num_classes=3).eval()
    inputs = torch.randn(1, 3, 32, 32)
    for method in ("guided_backprop", "deconvnet"):
        with pytest.raises(AttributionError, match="ReLU"):
            attribute(model, inputs, [0], methods=(method,))


def _tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's documented ViT reshape: drop the class token, tokens to a grid."""
    n, count, channels = tokens.shape
    side = int((count - 1) ** 0.5)
    return tokens[:, 1:].reshape(n, side, side, channels).permute(0, 3, 1, 2)


def test_vision_transformer_gradcam_over_the_token_grid():
    """A small torchvision VisionTransformer (the class of vit_b_16): the automatic layer is
    the last block's ln_1, and Grad-CAM over its 4x4 token grid matches pytorch-grad-cam with
    the class token dropped by its reshape_transform."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=3,
    ).eval()
    torch.nn.init.normal_(model.heads.head.weight)  # torchvision initialises the head to zero
    layer = resolve_target_layer(model, None, image_size=32)
    assert (layer.name, layer.cells) == ("encoder.layers.encoder_layer_1.ln_1", (4, 4))
    named = resolve_target_layer(model, "encoder.layers.encoder_layer_0", image_size=32)
    assert named.cells == (4, 4) and not named.automatic
    with pytest.raises(ModelError, match="token grid"):
        resolve_target_layer(model, "heads.head", image_size=32)
    inputs, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    ours = attribute(model, inputs, targets, methods=("gradcam",), target_layer=layer.module)
    with GradCAM(
        model=model, target_layers=[layer.module], reshape_transform=_tokens_to_grid
    ) as ex:
        outputs = ex.activations_and_grads(inputs)
        sum(ClassifierOutputTarget(int(t))(o) for t, o in zip(targets, outputs)).backward()
        recorded = ex.activations_and_grads
        activations, gradients = recorded.activations[0].numpy(), recorded.gradients[0].numpy()
        cam = ex.get_cam_image(inputs, layer.module, None, activations, gradients, False)
    theirs = torch.from_numpy(np.maximum(cam, 0))
    assert float(theirs.amax()) > 0
    close(ours["gradcam"], upsample(theirs, (32, 32)))


def test_vit_b_16_target_layer_is_the_last_blocks_token_grid():
    model = torchvision.models.vit_b_16(weights=None)
    layer = resolve_target_layer(model, None, image_size=224)
    assert (layer.name, layer.cells) == ("encoder.layers.encoder_layer_11.ln_1", (14, 14))


#: The torchvision families that the tests above do not already hold against a reference,
#: at 224 px (maxvit needs it), with the layer the audit picks by itself.
OTHER_FAMILIES = (
    "densenet121", "mobilenet_v3_small", "regnet_y_400mf", "convnext_tiny", "swin_t", "maxvit_t",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_every_other_family_matches_captum_and_pytorch_grad_cam_at_its_automatic_layer(
    family, monkeypatch
):
    """Saliency and gradient x input against Captum; Grad-CAM, LayerCAM and Grad-CAM++
    against pytorch-grad-cam before its normalisation (logits scaled by 1e4, as above), on
    the layer chosen with ``target_layer=None`` (channels-first there, so no reshape).
    Grad-CAM++ within 2e-3 of the largest value, not 1e-4: on these nets the two differ by
    up to 1e-5 (regnet), 4e-4 (convnext_tiny) and 1.6e-3 (densenet121) even so, likely its
    eps in the denominator and float32 sums (not isolated). pytorch-grad-cam keeps a
    reference to the layer's output, which DenseNet's in-place ``F.relu`` then rectifies (a
    known trap of hook-based CAMs): while the reference runs, ``torch.nn.functional.relu``
    works out of place. Ours runs on the unpatched model."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, family)(weights=None, num_classes=4).eval()
    # every class as target: a random net's Grad-CAM is all zero (after the ReLU) for some
    inputs = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    inputs, targets = inputs.repeat(4, 1, 1, 1), torch.arange(4).repeat_interleave(2)
    gradients, cams = ("saliency", "gradient_x_input"), ("gradcam", "layercam", "gradcam_pp")
    ours = attribute(model, inputs, targets, methods=gradients,
                     options=dict.fromkeys(gradients, CHANNELS))  # fmt: skip
    close(ours["saliency"], Saliency(model).attribute(inputs, target=targets, abs=False))
    close(ours["gradient_x_input"], InputXGradient(model).attribute(inputs, target=targets))
    scaled = nn.Sequential(model, _Scale(1e4)).eval()
    ours = attribute(scaled, inputs, targets, methods=cams)
    layer = ours.target_layer
    assert layer.automatic and min(layer.cells) >= 7
    with _relu_not_in_place(monkeypatch):
        theirs = _grad_cam_raw(scaled, layer.module, inputs, targets)
    for method in cams:
        assert theirs[method].shape[-2:] == tuple(layer.cells)  # the layer is channels-first
        assert float(theirs[method].amax()) > 0
        rtol = 2e-3 if method == "gradcam_pp" else 1e-4
        close(ours[method], upsample(theirs[method], (224, 224)), rtol=rtol)


@contextlib.contextmanager
def _relu_not_in_place(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as patch:
        patch.setattr(torchvision.models.densenet.F, "relu", lambda x, inplace=False: x.relu())
        yield
