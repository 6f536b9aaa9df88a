"""The planted-shortcut generator's cues and the lab's model helpers: old specs render the
very same bytes as before the cues were added, each cue is drawn where it should be, and
the ground-truth intervention removes it while keeping the object, colour included."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from auditor.errors import ConfigError
from auditor.lab.demo import ground_truth
from auditor.lab.drawing import (
    FRAME_COLOUR,
    Scene,
    class_hue,
    frame_width,
    polygon,
    render,
    watermark_box,
)
from auditor.lab.models import build_model, file_name, load_backbone
from auditor.lab.synthetic import (
    SyntheticSpec,
    iter_interventions,
    read_scenes,
    sample_scenes,
    scene_dict,
    spec_dict,
    with_cue_of,
    write_coco,
)

FOUR = ("circle", "square", "triangle", "cross")

#: sha256 of 12 scenes' renders, their interventions and scenes.json, computed with the
#: generator before the watermark, frame, object size and object colour fields existed.
BEFORE_CUES = {
    "default": (
        SyntheticSpec(),
        "df2ca9352b3ab4b659f9099671b31a17128c37ee426bfad731766f94d1bd58d1",
    ),
    "corner": (
        SyntheticSpec(classes=FOUR, background_strength=(0.9, 0, 0, 0.5),
                      artefact_rate=(1.0, 0.5, 0, 0), image_size=48, seed=3),
        "4084b63464b5f3bbae7ddbdb0f536e8e7d2bb55f382c9ad4931e313fe3769d5b",
    ),
    "others": (
        SyntheticSpec(classes=("circle", "square"), background_strength=(0.9, 0.9),
                      artefact_rate=(0, 0), image_size=32, seed=5, alternative="others"),
        "26e85faee0119b2f0ecf8825ea0b6ffc818a027c9eed4062ecab39b7a003f363",
    ),
}  # fmt: skip


def spec_with(**fields: object) -> SyntheticSpec:
    base = {"classes": FOUR, "background_strength": (0.0,) * 4, "artefact_rate": (1.0,) * 4}
    return SyntheticSpec(**{**base, "image_size": 64, **fields})  # type: ignore[arg-type]


def pixels(scene: Scene) -> np.ndarray:
    return np.asarray(render(scene)).astype(int)


def object_mask(scene: Scene) -> np.ndarray:
    mask = Image.new("L", (scene.size, scene.size))
    ImageDraw.Draw(mask).polygon(polygon(scene), fill=1)
    return np.asarray(mask).astype(bool)


@pytest.mark.parametrize("name", sorted(BEFORE_CUES))
def test_old_specs_render_the_same_bytes_as_before_the_cues(name: str) -> None:
    spec, expected = BEFORE_CUES[name]
    scenes = sample_scenes(spec, 12, seed=spec.seed)
    digest = hashlib.sha256()
    for scene in [*scenes, *iter_interventions(scenes, spec, seed=7)]:
        digest.update(render(scene).tobytes())
    digest.update(json.dumps([scene_dict(s) for s in scenes]).encode())
    assert digest.hexdigest() == expected


def test_spec_and_scene_json_omit_the_new_fields_at_their_defaults() -> None:
    old_keys = {"classes", "background_strength", "artefact_rate", "image_size", "n_train",
                "n_audit", "seed", "alternative"}  # fmt: skip
    assert set(spec_dict(SyntheticSpec())) == old_keys
    new = spec_dict(spec_with(artefact="frame", object_colour_strength=(1.0,) * 4))
    assert new["artefact"] == "frame" and new["object_colour_strength"] == (1.0,) * 4
    assert "object_radius" not in new
    scene = sample_scenes(SyntheticSpec(), 1, seed=0)[0]
    assert "artefact_kind" not in scene_dict(scene)


def test_scenes_written_before_the_cues_still_load(tmp_path) -> None:
    spec = spec_with(artefact="watermark")
    scenes = sample_scenes(spec, 4, seed=1)
    write_coco(scenes, spec, tmp_path)
    assert read_scenes(tmp_path) == scenes
    old = [{k: v for k, v in dataclasses.asdict(s).items() if k != "artefact_kind"} for s in scenes]
    (tmp_path / "scenes.json").write_text(json.dumps(old))
    assert {s.artefact_kind for s in read_scenes(tmp_path)} == {"corner"}


@pytest.mark.parametrize("size", [64, 128])
def test_watermark_sits_in_its_box_behind_the_object_and_the_intervention_removes_it(
    size: int,
) -> None:
    spec = spec_with(artefact="watermark", image_size=size)
    for scene, cue_free in zip(
        sample_scenes(spec, 8, seed=2),
        iter_interventions(sample_scenes(spec, 8, seed=2), spec, seed=3),
    ):
        without = dataclasses.replace(scene, artefact=False)
        changed = (pixels(scene) != pixels(without)).any(-1)
        x0, y0, x1, y1 = watermark_box(size, scene.texture_seed)
        inside = np.zeros_like(changed)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        assert changed.any() and not (changed & ~inside).any()
        assert not (changed & object_mask(scene)).any()  # drawn before the object
        assert (pixels(scene)[changed] < 60).all()  # dark strokes
        assert not cue_free.artefact and cue_free.color == scene.color


def test_watermark_moves_from_image_to_image() -> None:
    scenes = sample_scenes(spec_with(artefact="watermark"), 8, seed=4)
    assert len({watermark_box(64, s.texture_seed)[:2] for s in scenes}) > 4


def test_frame_is_a_coloured_border_and_the_intervention_removes_it() -> None:
    spec = spec_with(artefact="frame")
    scenes = sample_scenes(spec, 6, seed=5)
    width = frame_width(64)
    for scene, cue_free in zip(scenes, iter_interventions(scenes, spec, seed=6)):
        image = pixels(scene)
        border = np.ones((64, 64), dtype=bool)
        border[width:-width, width:-width] = False
        assert (image[border] == FRAME_COLOUR).all()
        without = pixels(dataclasses.replace(scene, artefact=False))
        assert (image[~border] == without[~border]).all()
        assert not (pixels(cue_free)[border] == FRAME_COLOUR).all(-1).any()


def test_corner_mark_is_still_drawn_after_the_object() -> None:
    scene = sample_scenes(spec_with(), 1, seed=7)[0]
    assert scene.artefact_kind == "corner"
    image = pixels(scene)
    assert (image[4, 4] == (220, 0, 0)).all() and (image[2, 5] == 255).all()


def test_class_coloured_objects_keep_their_colour_under_the_intervention() -> None:
    import colorsys

    spec = spec_with(object_colour_strength=(1.0,) * 4, artefact_rate=(0.0,) * 4)
    scenes = sample_scenes(spec, 16, seed=8)
    for scene, cue_free in zip(scenes, iter_interventions(scenes, spec, seed=9)):
        hue = colorsys.rgb_to_hsv(*(c / 255 for c in scene.color))[0]
        assert hue == pytest.approx(class_hue(scene.label, 4), abs=0.01)
        assert cue_free.color == scene.color and cue_free.background != scene.background
        assert (pixels(cue_free)[object_mask(scene)] == scene.color).all()


def test_object_colour_strength_zero_leaves_hues_free() -> None:
    import colorsys

    spec = spec_with(object_colour_strength=(0.0,) * 4)
    hues = {round(colorsys.rgb_to_hsv(*(c / 255 for c in s.color))[0], 2)
            for s in sample_scenes(spec, 16, seed=10)}  # fmt: skip
    assert len(hues) > 8


def test_object_radius_spans_the_range_and_objects_stay_inside() -> None:
    spec = spec_with(object_radius=(0.13, 0.40), artefact_rate=(0.0,) * 4)
    scenes = sample_scenes(spec, 200, seed=11)
    radii = np.array([s.radius / 64 for s in scenes])
    assert radii.min() >= 0.13 and radii.max() <= 0.40
    assert radii.min() < 0.15 and radii.max() > 0.38
    for scene in scenes:
        xs, ys = zip(*polygon(scene))
        assert min(xs) >= -0.5 and min(ys) >= -0.5 and max(xs) <= 64.5 and max(ys) <= 64.5


@pytest.mark.parametrize(
    "fields",
    [{"object_radius": (0.3, 0.2)}, {"object_radius": (0.1, 0.6)},
     {"object_colour_strength": (1.0,)}, {"artefact": "sticker"}],
)  # fmt: skip
def test_bad_cue_fields_are_config_errors(fields: dict) -> None:
    with pytest.raises(ConfigError):
        spec_with(**fields)


def test_backbone_fills_everything_but_the_fresh_head() -> None:
    torch.manual_seed(0)
    source = build_model("resnet18", 6)
    torch.manual_seed(1)
    model = build_model("resnet18", 4)
    head_before = model.fc.weight.clone()
    assert load_backbone(model, source.state_dict()) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert torch.equal(model.fc.weight, head_before)


def test_factories_build_by_module_path_as_the_cli_does() -> None:
    from auditor.models import load_model

    vit = build_model("auditor.lab.models:small_vit", 4)
    assert vit(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    loaded = load_model("auditor.lab.models:small_vit").model
    assert loaded.state_dict().keys() == vit.state_dict().keys()
    assert file_name("auditor.lab.models:small_vit") == "small_vit"
    assert file_name("resnet18") == "resnet18"
    with pytest.raises(ConfigError):
        build_model("auditor.lab.models:FOUR_SHAPES", 4)


def test_recalibrated_norm_statistics_are_those_of_the_training_images() -> None:
    from auditor.lab.training import _recalibrate_norm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2, momentum=0.01))
    inputs = torch.randn(20, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1
    _recalibrate_norm(model, inputs, batch_size=20)
    features = model[0](inputs).detach()
    expected = features.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected, atol=1e-5)
    assert model[1].momentum is None and model.training  # the caller sets eval mode


def test_a_donors_cue_moves_onto_other_objects_which_stay_as_they_were() -> None:
    spec = spec_with(background_strength=(1.0,) * 4, artefact_rate=(1.0, 0, 0, 0))
    scenes = sample_scenes(spec, 8, seed=4)
    donors = [s for s in scenes if s.label == 0]
    others = [s for s in scenes if s.label != 0]
    moved = with_cue_of(others, donors, seed=1)
    assert moved == with_cue_of(others, donors, seed=1)
    for before, after in zip(others, moved):
        donor = next(d for d in donors if d.texture_seed == after.texture_seed)
        assert (after.background, after.artefact) == (donor.background, True)
        assert dataclasses.replace(after, background=before.background,
                                   texture_seed=before.texture_seed, artefact=before.artefact,
                                   artefact_kind=before.artefact_kind) == before  # fmt: skip
        # the object's pixels are its own, the background's (away from the mark) the donor's
        image, own, theirs = pixels(after), pixels(before), pixels(donor)
        keep = object_mask(after)
        assert (image[keep] == own[keep]).all()
        free = ~(keep | object_mask(donor))
        assert (image[free] == theirs[free]).all()


PLANTED_SPEC = SyntheticSpec(
    background_strength=(1.0,) * 4, image_size=32, n_train=4, n_audit=100, seed=7
)  # the spec of conftest's planted_dataset


def test_ground_truth_sees_a_background_reader_rely_on_every_background_and_follow_it(
    planted_dataset, planted_weights
) -> None:
    truth = ground_truth(planted_weights, PLANTED_SPEC, planted_dataset.parent,
                         arch="planted:background_reader")  # fmt: skip
    assert [t["class"] for t in truth] == list(PLANTED_SPEC.classes)
    assert all(t["background_reliant"] and t["follows_cue"] for t in truth)
    # on the cue-free backgrounds, every other object is called the donor class
    assert max(t["cue_follow"] for t in truth) == 1.0


def test_a_model_that_always_answers_one_class_follows_no_cue(planted_dataset, tmp_path) -> None:
    from planted import background_reader

    model = background_reader()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([5.0, 0, 0, 0]))
    torch.save(model.state_dict(), tmp_path / "constant.pt")
    truth = ground_truth(tmp_path / "constant.pt", PLANTED_SPEC, planted_dataset.parent,
                         arch="planted:background_reader")  # fmt: skip
    assert [t["accuracy"] for t in truth] == [1.0, 0.0, 0.0, 0.0]
    assert all(t["cue_follow"] == 0 and not t["follows_cue"] for t in truth)
    assert not any(t["background_reliant"] for t in truth)
