"""Models as users have them: timm and Hugging Face architectures, and forwards that return a
tuple, a dict or a ``ModelOutput``. Each family's automatic layer, maps and randomisation
check are held against Captum and pytorch-grad-cam (with its reshape step for transformer
tokens and channels-last maps) on tiny random-weight configurations; nothing is downloaded."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import timm
import torch
import transformers
from captum.attr import GuidedBackprop, Saliency
from click.testing import CliRunner
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import save_file
from torch import nn

import auditor
from auditor.attribution.cam import upsample
from auditor.cli import cli
from auditor.detect.sanity import randomization_check
from auditor.errors import AttributionError, ModelError
from auditor.lab.synthetic import SyntheticSpec, write_dataset
from auditor.models import load_model, logits_of

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CLASSES = 3
QUIET = ["--no-pdf", "--no-history", "--methods", "gradcam,saliency", "--batch-size", "8",
         "--donor-pool", "8", "--class-model-steps", "0", "--subgroup-maps", "0",
         "--detect-sanity-samples", "2", "--detect-bootstrap", "100"]  # fmt: skip


def _timm(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=CLASSES, **kwargs)


def _hf(config: transformers.PretrainedConfig) -> Callable[[], nn.Module]:
    return lambda: transformers.AutoModelForImageClassification.from_config(config)


TINY_VIT = {"img_size": 64, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2}
TINY_SWIN = {"img_size": 64, "window_size": 4, "depths": (1, 1, 1, 1), "embed_dim": 24,
             "num_heads": (1, 1, 1, 1)}  # fmt: skip

#: family -> (builder, input side, layout of the automatic layer, tokens before its grid,
#: what guided backprop does: "exact" against Captum, or "refused" (no ReLU in the model))
FAMILIES: dict[str, tuple[Callable[[], nn.Module], int, str, int, str]] = {
    "timm-resnet": (_timm("resnet18"), 64, "nchw", 0, "exact"),
    "timm-efficientnet": (_timm("efficientnet_b0"), 64, "nchw", 0, "refused"),
    "timm-convnext": (_timm("convnext_atto"), 64, "nchw", 0, "refused"),
    "timm-regnet": (_timm("regnetx_002"), 64, "nchw", 0, "exact"),
    "timm-vit": (_timm("vit_tiny_patch16_224", **TINY_VIT), 64, "tokens", 1, "refused"),
    "timm-deit": (_timm("deit_tiny_patch16_224", **TINY_VIT), 64, "tokens", 1, "refused"),
    "timm-swin": (_timm("swin_tiny_patch4_window7_224", **TINY_SWIN), 64, "nhwc", 0, "refused"),
    "hf-vit": (_hf(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=CLASSES)), 32, "tokens", 1, "refused"),
    "hf-convnext": (_hf(transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_labels=CLASSES)),
        64, "nchw", 0, "refused"),
    "hf-swin": (_hf(transformers.SwinConfig(
        image_size=128, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1], window_size=4, num_labels=CLASSES)), 128, "tokens", 0, "refused"),
}  # fmt: skip


class Logits(nn.Module):
    """A reference library's view of a model: a forward that returns the logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(inputs)
        return out if isinstance(out, torch.Tensor) else out.logits


def close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-4) -> None:
    theirs = theirs.detach().to(ours)
    torch.testing.assert_close(ours, theirs, rtol=rtol, atol=rtol * float(theirs.abs().max()))


def _reshape(layout: str, prefix: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pytorch-grad-cam's reshape step, as its documentation writes it for ViT and Swin."""
    if layout == "nhwc":
        return lambda t: t.permute(0, 3, 1, 2)
    if layout == "tokens":

        def grid(t: torch.Tensor) -> torch.Tensor:
            side = math.isqrt(t.shape[1] - prefix)
            return t[:, prefix:].reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)

        return grid
    return None


def their_gradcam(model, layer, layout, prefix, inputs, targets) -> torch.Tensor:
    """pytorch-grad-cam's Grad-CAM before it min-max normalises and resizes with cv2."""
    with GradCAM(
        model=model, target_layers=[layer], reshape_transform=_reshape(layout, prefix)
    ) as extractor:
        outputs = extractor.activations_and_grads(inputs)
        loss = sum(ClassifierOutputTarget(int(t))(o) for t, o in zip(targets, outputs))
        loss.backward()
        recorded = extractor.activations_and_grads
        activations = recorded.activations[0].numpy()
        gradients = recorded.gradients[0].numpy()
        cam = extractor.get_cam_image(inputs, layer, None, activations, gradients, False)
    model.zero_grad(set_to_none=True)
    return torch.from_numpy(cam).clamp(min=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_has_a_layer_maps_like_the_references_and_a_randomisation_check(family):
    build, size, layout, prefix, guided = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()  # its forward returns a ModelOutput for Hugging Face models
    inputs = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    # every class as target: a random net's Grad-CAM is all zero (after the ReLU) for some
    inputs, targets = inputs.repeat(CLASSES, 1, 1, 1), torch.arange(CLASSES).repeat_interleave(2)
    ours = auditor.attribute(model, inputs, targets, methods=("saliency", "gradcam"),
                             options={"saliency": {"reduce": "channels"}})  # fmt: skip
    layer = ours.target_layer
    assert layer is not None and layer.automatic and layer.layout == layout, layer
    reference = Logits(model).eval()
    close(ours["saliency"], Saliency(reference).attribute(inputs, target=targets, abs=False))
    theirs = their_gradcam(reference, layer.module, layout, prefix, inputs, targets)
    assert tuple(theirs.shape[-2:]) == layer.cells and float(theirs.amax()) > 0
    close(ours["gradcam"], upsample(theirs, (size, size)))
    if guided == "exact":
        found = auditor.attribute(model, inputs, targets, methods=("guided_backprop",),
                                  options={"guided_backprop": {"reduce": "channels"}})  # fmt: skip
        assert not found.partial
        close(found["guided_backprop"], GuidedBackprop(reference).attribute(inputs, target=targets))
    else:
        with pytest.raises(AttributionError, match=r"need.s. ReLU units"):
            auditor.attribute(model, inputs, targets, methods=("guided_backprop",))
    similarity, _ = randomization_check(model, inputs[:4], targets[:4], ("gradcam", "saliency"),
                                        target_layer=layer, max_similarity=0.5)  # fmt: skip
    assert set(similarity) == {"gradcam", "saliency"} and math.isfinite(similarity["saliency"])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Eight images of three shape classes at 64 px."""
    spec = SyntheticSpec(classes=("circle", "square", "triangle"), image_size=64, n_train=3,
                         n_audit=8, seed=3, background_strength=(0.0,) * 3,
                         artefact_rate=(0.0,) * 3)  # fmt: skip
    return write_dataset(spec, tmp_path_factory.mktemp("hub"))["audit"]


def _audit(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["audit", *args, *QUIET])
    return result.exit_code, result.output


def test_a_timm_model_with_safetensors_weights_audits_from_the_command_line(shapes, tmp_path):
    torch.manual_seed(0)
    save_file(_timm("resnet18")().state_dict(), tmp_path / "w.safetensors")
    code, output = _audit("--model", "timm:resnet18", "--weights", str(tmp_path / "w.safetensors"),
                          "--data", str(shapes), "--out", str(tmp_path / "run"),
                          "--image-size", "64")  # fmt: skip
    assert code in (0, 3), output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["model"] == {"spec": "timm:resnet18", "num_classes": 3,
                             "sha256": info["model"]["sha256"]}  # fmt: skip
    assert info["target_layer"]["name"] == "layer2"  # layer4 is 2x2 at 64 px
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [c["name"] for c in summary["classes"]] == ["circle", "square", "triangle"]


def test_a_timm_vit_audits_on_its_token_grid(shapes, tmp_path):
    """timm's ViT-Tiny as its name builds it (224 px, 12 blocks), random weights."""
    torch.manual_seed(0)
    torch.save(_timm("vit_tiny_patch16_224")().state_dict(), tmp_path / "vit.pt")
    loaded = load_model("timm:vit_tiny_patch16_224", tmp_path / "vit.pt")
    detect = auditor.DetectConfig(sanity_samples=2, bootstrap=100)
    config = auditor.AuditConfig(methods=("gradcam", "saliency"), image_size=224, batch_size=8,
                                 donor_pool=8, class_model_steps=0, subgroup_maps=0,
                                 detect=detect)  # fmt: skip
    run = auditor.audit(loaded, data=shapes, config=config)
    layer = run.run_info["target_layer"]
    assert (layer["name"], layer["cells"], layer["layout"]) == ("blocks.11.norm1", [14, 14],
                                                                 "tokens")  # fmt: skip
    assert run.samples["skip_reason"].isna().all() and not run.summary.method_errors


def _hf_folder(folder, labels: list[str]) -> None:
    config = transformers.ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)


def test_a_hugging_face_folder_audits_and_its_labels_are_checked(shapes, tmp_path):
    _hf_folder(tmp_path / "vit", ["Circle", "square", "triangle"])  # case does not count
    code, output = _audit("--model", f"hf:{tmp_path / 'vit'}", "--data", str(shapes),
                          "--out", str(tmp_path / "run"), "--image-size", "64")  # fmt: skip
    assert code in (0, 3), output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["target_layer"]["name"] == "vit.layers.1.layernorm_before"
    assert info["model"]["sha256"] is not None  # the folder's model.safetensors
    _hf_folder(tmp_path / "other", ["circle", "triangle", "square"])
    code, output = _audit("--model", f"hf:{tmp_path / 'other'}", "--data", str(shapes),
                          "--out", str(tmp_path / "bad"), "--image-size", "64")  # fmt: skip
    assert code == 1 and len(output.strip().splitlines()) == 1, output
    assert "output 1 is 'triangle' in the model, 'square' in the data" in output
    _hf_folder(tmp_path / "generic", ["LABEL_0", "LABEL_1", "LABEL_2"])
    loaded = load_model(f"hf:{tmp_path / 'generic'}")
    assert loaded.labels is None  # generic names say nothing, so nothing is checked


@pytest.mark.parametrize(("factory", "key"), [("planted:tuple_reader", None),
                                              ("planted:dict_reader", "scores")])  # fmt: skip
def test_factories_returning_a_tuple_or_a_dict_give_the_planted_verdict(
    factory, key, planted_dataset, planted_weights, tmp_path
):
    """The background reader returning (logits, features) or {"features", "scores"}: the
    same model as the plain one, so every class must be flagged."""
    extra = ["--output-key", key] if key else []
    code, output = _audit("--model", factory, "--weights", str(planted_weights), "--data",
                          str(planted_dataset), "--out", str(tmp_path), "--image-size", "32",
                          *extra)  # fmt: skip
    assert code == 0, output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "fail" and len(summary["flagged_classes"]) == 4


def test_a_dict_of_unnamed_logits_is_refused_in_one_line(planted_dataset, planted_weights,
                                                          tmp_path):  # fmt: skip
    code, output = _audit("--model", "planted:dict_reader", "--weights", str(planted_weights),
                          "--data", str(planted_dataset), "--out", str(tmp_path),
                          "--image-size", "32")  # fmt: skip
    assert code == 1 and len(output.strip().splitlines()) == 1, output
    assert "features, scores and none named 'logits'" in output and "--output-key" in output


def test_the_logits_rule():
    logits, other = torch.ones(2, 3), torch.zeros(2, 5)
    output = transformers.modeling_outputs.ImageClassifierOutput(logits=logits)
    assert logits_of(output) is logits
    assert logits_of((logits, other)) is logits and logits_of([None, other]) is other
    assert logits_of({"logits": logits, "aux": other}) is logits
    assert logits_of({"aux": other, "scores": logits}, "scores") is logits
    assert logits_of((other, logits), "1") is logits
    with pytest.raises(ModelError, match=r"--output-key nope: .* it has: aux, scores"):
        logits_of({"aux": other, "scores": logits}, "nope")
    with pytest.raises(ModelError, match="no tensor in it"):
        logits_of(("text",))


def test_a_missing_extra_is_one_line_naming_the_install(monkeypatch, shapes, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    code, output = _audit("--model", "timm:resnet18", "--weights", str(tmp_path / "w.pt"),
                          "--data", str(shapes), "--out", str(tmp_path / "a"))  # fmt: skip
    assert code == 1 and len(output.strip().splitlines()) == 1, output
    assert "pip install 'auditor[timm]'" in output
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    code, output = _audit("--model", f"hf:{tmp_path / 'hf'}", "--data", str(shapes),
                          "--out", str(tmp_path / "b"))  # fmt: skip
    assert code == 1 and "pip install 'auditor[hf]'" in output, output


def test_safetensors_weights_load_and_a_pickle_named_safetensors_is_refused(tmp_path):
    torch.manual_seed(0)
    state = _timm("resnet18")().state_dict()
    save_file(state, tmp_path / "real.safetensors")
    torch.save(state, tmp_path / "pickle.safetensors")
    for spec in ("resnet18", "timm:resnet18"):
        if spec == "resnet18":
            import torchvision

            tv = torchvision.models.resnet18(num_classes=CLASSES).state_dict()
            save_file(tv, tmp_path / "real.safetensors")
            torch.save(tv, tmp_path / "pickle.safetensors")
        loaded = load_model(spec, tmp_path / "real.safetensors")
        assert loaded.model.fc.out_features == CLASSES
        with pytest.raises(ModelError, match=r"pickle.safetensors: not a readable PyTorch"):
            load_model(spec, tmp_path / "pickle.safetensors")
    with pytest.raises(ModelError, match="timm has no architecture 'nope'"):
        load_model("timm:nope", tmp_path / "real.safetensors")
