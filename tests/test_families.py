"""Every torchvision classification family audits end to end at 224 px with the default
layer (random weights, a handful of images): no crash, a resolved layer of at least 7x7
cells or a token grid, finite scores, and guided methods either exact or marked partial.

The faithfulness check runs on resnet18 only: it needs nothing of a family but its forward
pass, and at 224 px it took 73 of resnet18's 80 audit seconds (maxvit_t: 182 s with it,
24 s without), most of this file's 20 minutes. Its own tests are in test_faithfulness.py."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

import auditor
from auditor.config import AuditConfig, DetectConfig
from auditor.lab.synthetic import SyntheticSpec, write_dataset
from auditor.models import LoadedModel

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FAMILIES = {
    "resnet18": "layer4",
    "densenet121": "features",
    "mobilenet_v2": "features",
    "mobilenet_v3_small": "features",
    "efficientnet_b0": "features",
    "regnet_y_400mf": "trunk_output",
    "convnext_tiny": "features",
    "vit_b_16": "encoder.layers.encoder_layer_11.ln_1",
    "swin_t": "permute",
    "maxvit_t": "blocks.3",
}
# ReLUs beside other nonlinearities (Hardswish, sigmoid gates): guided backprop is partial;
# no ReLU at all (SiLU, GELU): it cannot run and is left out with the reason.
PARTIAL = {"mobilenet_v3_small", "regnet_y_400mf"}
NO_RELU = {"efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t", "maxvit_t"}
FAITHFULNESS_ON = "resnet18"


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    spec = SyntheticSpec(image_size=64, n_train=4, n_audit=8, seed=2)
    return write_dataset(spec, tmp_path_factory.mktemp("families"))["audit"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_audits_at_224_with_the_default_layer(family, eight_images):
    torch.manual_seed(0)
    net = getattr(torchvision.models, family)(num_classes=4).eval()
    if family == "vit_b_16":
        torch.nn.init.normal_(net.heads.head.weight, std=0.05)  # torchvision starts it at zero
    config = AuditConfig(
        methods=("gradcam", "saliency", "guided_backprop"), image_size=224, batch_size=8,
        donor_pool=8, class_model_steps=0, subgroup_maps=0,
        detect=DetectConfig(sanity_samples=2, bootstrap=100,
                            faithfulness_samples=4 if family == FAITHFULNESS_ON else 0),
    )  # fmt: skip
    run = auditor.audit(LoadedModel(net, family, None), data=eight_images, config=config)
    layer = run.run_info["target_layer"]
    assert layer["name"] == FAMILIES[family] and min(layer["cells"]) >= 7
    scored = run.samples[run.samples["skip_reason"].isna()]
    refused = run.summary.method_errors
    assert ("guided_backprop" in refused) == (family in NO_RELU), refused
    assert len(scored) == 8 * (3 - len(refused)) and set(refused) <= {"guided_backprop"}
    saliency = scored.loc[scored["method"] == "saliency", "chance_corrected"]
    assert saliency.map(math.isfinite).all()
    gradcam = scored.loc[scored["method"] == "gradcam", "chance_corrected"]
    assert gradcam.map(math.isfinite).sum() >= 4  # a random net's CAM may be all zero: undefined
    partial = run.run_info["partial_methods"]
    assert ("guided_backprop" in partial) == (family in PARTIAL), partial
    measured = set(run.summary.trust.faithfulness)
    assert measured == ({"gradcam", "saliency", "guided_backprop"} if family == FAITHFULNESS_ON
                        else set())  # fmt: skip
