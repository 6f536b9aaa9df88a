"""The intervention registry: each entry's view, the samples columns and statistics that
follow from it, and the extra ``blurred`` intervention (the object on a blurred copy of its
own background), added as one entry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from auditor.config import AuditConfig, DetectConfig
from auditor.detect import class_results
from auditor.detect.interventions import (
    DonorPool,
    blur_background,
    flat_background,
    gaussian_blur,
)
from auditor.detect.views import CORE, REGISTRY, active, behaviour, columns, named
from auditor.errors import ConfigError
from auditor.models import LoadedModel
from auditor.report.render import render_html
from auditor.runner.batch import sample_columns
from auditor.runner.pipeline import audit

pytestmark = pytest.mark.usefixtures("one_thread")


def scenes(textured: list[bool], size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images with a bright square object in the middle; ``textured`` ones have a
    one-pixel checkerboard background around it (fine detail a blur removes)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    board = ((ys + xs) % 2).float() * 0.8 - 0.4
    inputs = torch.zeros(len(textured), 3, size, size)
    for i, t in enumerate(textured):
        if t:
            inputs[i] += board
    masks = torch.zeros(len(textured), size, size, dtype=torch.bool)
    masks[:, 12:20, 12:20] = True
    inputs[:, :, 12:20, 12:20] = 1.0
    return inputs, masks


class TextureReader(nn.Module):
    """Class 1 when the image has fine texture (mean absolute horizontal difference), else
    class 0: a model that reads its background's detail, and nothing of the object."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        detail = (inputs[..., 1:] - inputs[..., :-1]).abs().mean((1, 2, 3))
        return torch.stack([0.2 - detail, detail - 0.2], 1) * 50


def test_the_blurred_view_keeps_the_object_and_takes_away_the_backgrounds_detail():
    inputs, masks = scenes([True, False])
    view = blur_background(inputs, masks)
    inside = masks[:, None].expand_as(inputs)
    assert torch.equal(view[inside], inputs[inside])
    detail = (view[..., 1:] - view[..., :-1]).abs()[:, :, :4].mean((1, 2, 3))  # top rows
    assert detail[0] < 0.05 * (inputs[..., 1:] - inputs[..., :-1]).abs()[0, :, :4].mean()
    # the background keeps its level (the object's box is filled with background, not
    # smeared into it): the rows next to the object are near the grey of the image
    near = view[:, :, 8:11, 8:24]
    assert near.abs().max() < 0.2
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(flat, 0.04), flat)


def test_a_texture_reader_loses_its_class_on_the_blurred_view_only():
    inputs, masks = scenes([True] * 4 + [False] * 4)
    targets = torch.tensor([1] * 4 + [0] * 4)
    pool = DonorPool(inputs.clone(), targets.clone())
    model = TextureReader()
    assert model(inputs).argmax(1).tolist() == targets.tolist()
    b = behaviour(model, inputs, masks, targets, torch.arange(8), pool, REGISTRY)
    assert b.predictions["blurred"].tolist() == [0] * 8  # the detail is gone: class 1 lost
    assert b.predictions["same_class"].tolist() == targets.tolist()  # own texture kept
    assert b.predictions["swapped"].tolist() == [0] * 4 + [1] * 4  # the donors' texture read
    # the entries and the samples' columns agree (prob_label is the original image's)
    assert set(b.columns()) == set(columns(REGISTRY)) - {"prob_label"}
    core = behaviour(model, inputs, masks, targets, torch.arange(8), pool)
    assert set(core.predictions) == {i.name for i in CORE}


def test_the_flat_view_keeps_the_object_on_its_backgrounds_mean_colour():
    inputs, masks = scenes([True, False])
    inputs[1] += torch.tensor([0.3, -0.2, 0.1])[:, None, None] * ~masks[1]  # a coloured one
    view = flat_background(inputs, masks)
    inside = masks[:, None].expand_as(inputs)
    assert torch.equal(view[inside], inputs[inside])
    for i in range(2):
        outside = view[i][:, ~masks[i]]
        expected = inputs[i][:, ~masks[i]].double().mean(1, keepdim=True)
        torch.testing.assert_close(outside.double(), expected.expand_as(outside), atol=1e-6,
                                   rtol=0)  # fmt: skip
    whole = torch.ones(1, 32, 32, dtype=torch.bool)  # no background: the image's mean
    torch.testing.assert_close(flat_background(inputs[:1], whole), inputs[:1])
    model = TextureReader()  # reads detail: the flat fill has none, class 1 is lost
    targets = torch.tensor([1] * 4 + [0] * 4)
    x, m = scenes([True] * 4 + [False] * 4)
    b = behaviour(model, x, m, targets, torch.arange(8), DonorPool(x.clone(), targets.clone()),
                  active(["flat"]))  # fmt: skip
    assert b.predictions["flat"].tolist() == [0] * 8
    assert "pred_flat" in sample_columns(active(["flat"]))


def test_extra_interventions_are_named_ones_in_registry_order():
    assert active() == CORE
    assert [i.name for i in active(["blurred"])] == [*(i.name for i in CORE), "blurred"]
    with pytest.raises(ConfigError, match="unknown 'fog'; known: blurred, flat"):
        active(["fog"])
    with pytest.raises(ConfigError, match="unknown 'swapped'"):
        active(["swapped"])  # a core one always runs: naming it is a mistake
    assert named("blurred").statistic == "accuracy_drop"
    assert sample_columns(CORE)[-4:] == ["prob_label_background_only", "prob_label_same_class",
                                         "skip_reason", "skip_detail"]  # fmt: skip
    assert "pred_blurred" in sample_columns(active(["blurred"]))


def frame(*, blurred_wrong: set[int], swap_wrong: set[int], n: int = 40) -> pd.DataFrame:
    """Scored rows of 3 classes whose maps sit on the object; the classes in
    ``blurred_wrong`` are mistaken on the blurred view, those in ``swap_wrong`` when swapped."""
    rng = np.random.default_rng(0)
    rows = []
    for label in range(3):
        for i in range(n):
            donor = (label + 1 + i % 2) % 3
            rows.append({
                "sample": label * 1000 + i, "label": label, "method": "gradcam",
                "correct": True, "chance_corrected": 0.5 + rng.normal(0, 0.05),
                "skip_reason": None, "donor_label": donor,
                "pred_swapped": donor if label in swap_wrong else label,
                "pred_background_only": i % 3, "pred_same_class": label,
                "pred_blurred": (label + 1) % 3 if label in blurred_wrong else label,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_an_accuracy_drop_on_an_extra_view_is_evidence_and_two_views_that_agree_flag():
    results = class_results(frame(blurred_wrong={0}, swap_wrong=set()), list("abc"), ["gradcam"],
                            DetectConfig())  # fmt: skip
    assert [r.status for r in results] == ["warn", "pass", "pass"]
    (gap,) = results[0].findings
    assert (gap.kind, gap.intervention, gap.value, gap.n) == ("intervention_gap", "blurred", 1, 40)
    assert results[1].behaviour.drops["blurred"].gap == 0
    both = class_results(frame(blurred_wrong={0}, swap_wrong={0}), list("abc"), ["gradcam"],
                         DetectConfig())  # fmt: skip
    assert both[0].status == "flag"
    assert [f.kind for f in both[0].findings] == ["swap_gap", "intervention_gap",
                                                  "maps_missed_cue"]  # fmt: skip
    stored = both[0].to_dict()
    assert stored["behaviour"]["interventions"]["blurred"]["gap"] == 1.0
    assert stored["findings"][1]["intervention"] == "blurred"
    # without the extra view, nothing about it is stored
    plain = frame(blurred_wrong=set(), swap_wrong=set()).drop(columns="pred_blurred")
    entry = class_results(plain, list("abc"), ["gradcam"], DetectConfig())[0].to_dict()
    assert "interventions" not in entry["behaviour"]


def test_an_audit_runs_the_blurred_view_when_named(planted_dataset, planted_weights):
    """The background reader reads its background's colour, which a blur keeps: the swap
    catches it, the blurred view costs it nothing (an extra view accuses no one by itself)."""
    from planted import BackgroundReader

    net = BackgroundReader()
    net.load_state_dict(torch.load(planted_weights))
    config = AuditConfig(image_size=32, batch_size=25, methods=("gradcam",),
                         extra_interventions=("blurred",))  # fmt: skip
    run = audit(LoadedModel(net.eval(), "planted", None), data=planted_dataset, config=config)
    images = run.samples[run.samples["skip_reason"].isna()].drop_duplicates("sample")
    assert images["pred_blurred"].notna().all()
    for c in run.summary.classes:
        drop = c.behaviour.interventions["blurred"]
        assert drop.n == c.n and drop.gap < 0.1
        assert "intervention_gap" not in c.kinds() and "swap_gap" in c.kinds()
    html = render_html(run)
    assert "blurred background" in html and "Further interventions run too" in html
