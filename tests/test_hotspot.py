"""Off-object hotspots: small maps with the object left out, the window lift, the held-out
choice and test of a window, and the hotspot as attribution evidence in the rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditor.config import DetectConfig
from auditor.detect.findings import ClassResult, Finding
from auditor.detect.hotspot import (
    GRID,
    class_hotspots,
    excluded_cells,
    first_half,
    off_object_maps,
    where,
    window_lifts,
)
from auditor.detect.maps import MapSample
from auditor.detect.rule import has_hotspot, with_hotspots
from auditor.record import FindingRecord
from auditor.record.parse import from_dict
from auditor.report.words import sentence
from auditor.runner.exemplars import ClassEvidence

SIZE = 64
CONFIG = DetectConfig()
TOP_LEFT = (slice(1, 8), slice(1, 8))  # pixels, in cells 0-1 of the 16 x 16 grid
BOTTOM_RIGHT = (slice(50, 60), slice(52, 62))


def scene(
    n: int, spot: tuple[slice, slice] | None, *, seed: int, first: int, only: str = "all"
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """``n`` images (dataset positions ``first``...) of one class: a square object somewhere
    in the middle drawing most of the map, noise everywhere, and a weaker spot (on the
    images of the half ``only`` names: ``all``, ``first`` or ``second``)."""
    g = torch.Generator().manual_seed(seed)
    samples = list(range(first, first + n))
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    maps = torch.rand(n, SIZE, SIZE, generator=g) * 0.05
    halves = first_half(samples, CONFIG.seed)
    for i in range(n):
        y, x = torch.randint(20, 44, (2,), generator=g).tolist()
        masks[i, y - 9 : y + 9, x - 9 : x + 9] = True
        maps[i, y - 9 : y + 9, x - 9 : x + 9] += 1.0
        if spot is not None and only in ("all", ("second", "first")[int(halves[i])]):
            maps[i, spot[0], spot[1]] += 0.3
    return samples, maps, masks


def sampled(spots: list[tuple[slice, slice] | None], *, n: int = 120, seed: int = 0, **kw):
    """{class: {"m": MapSample}} of one scene per class."""
    kept = {}
    for c, spot in enumerate(spots):
        samples, maps, masks = scene(n, spot, seed=seed * 100 + c, first=c * n, **kw)
        kept[c] = {"m": MapSample(1000, 0)}
        kept[c]["m"].update(samples, off_object_maps(maps, excluded_cells(masks)))
    return kept


def found(kept) -> dict[int, tuple[float, ...]]:
    spots = class_hotspots(kept, ["m"], CONFIG, size=SIZE)
    return {c: s["m"].box for c, s in spots.items() if "m" in s and has_hotspot(s["m"], CONFIG)}


def test_off_object_maps_have_unit_mass_with_the_dilated_object_left_out():
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[:, 16:32, 16:32] = True  # dilated by 2 px: 14..33, so cells 3..8 of 4 px each
    maps = torch.ones(2, SIZE, SIZE) * torch.tensor([1.0, 0.0])[:, None, None]
    small = off_object_maps(maps, excluded_cells(masks)).view(2, GRID, GRID)
    left_out = torch.zeros(GRID, GRID, dtype=torch.bool)
    left_out[3:9, 3:9] = True
    assert torch.equal(small[0].isnan(), left_out)
    torch.testing.assert_close(small[0][~left_out], torch.full((256 - 36,), 1 / 256))
    assert small[1].isnan().all()  # an all-zero map tells nothing
    valid = torch.ones(1, SIZE, SIZE, dtype=torch.bool)
    valid[0, :, 60:] = False  # an ignored strip leaves out the last column of cells
    cells = excluded_cells(masks[:1], valid).view(GRID, GRID)
    strip = torch.zeros(GRID, GRID, dtype=torch.bool)
    strip[:, 15] = True
    assert torch.equal(cells, left_out | strip)


def test_window_lift_is_one_where_mass_is_spread_evenly_off_the_object():
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[:, 16:32, 16:32] = True
    maps = torch.ones(2, SIZE, SIZE)
    maps[1] = masks[1].float()  # all its mass on the object
    lifts = window_lifts(off_object_maps(maps, excluded_cells(masks)).numpy())
    free = np.isfinite(lifts[0])
    assert free.sum() == 225 - 49  # windows of 2 x 2 cells that touch cells 3..8 of 15 x 15
    np.testing.assert_allclose(lifts[0][free], 1.0)
    np.testing.assert_array_equal(lifts[1][free], 0.0)


@pytest.mark.parametrize(
    ("spot", "box", "words"),
    [(TOP_LEFT, (0.0, 0.0, 0.125, 0.125), "top-left corner"),
     (BOTTOM_RIGHT, (0.8125, 0.8125, 0.9375, 0.9375), "bottom-right corner")],
)  # fmt: skip
def test_a_spot_on_one_class_is_found_where_it_is(spot, box, words):
    hits = found(sampled([spot, None, None, None]))
    assert set(hits) == {0}
    x0, y0, _, _ = hits[0]
    assert box[0] - 0.07 <= x0 <= box[0] + 0.07 and box[1] - 0.07 <= y0 <= box[1] + 0.07
    assert where(hits[0]) == words


def test_a_spot_every_class_shares_is_no_hotspot():
    assert found(sampled([TOP_LEFT] * 4)) == {}
    assert found(sampled([TOP_LEFT, TOP_LEFT, None, None])) == {}  # shared with one other


def test_maps_that_spread_further_from_the_object_than_others_give_no_hotspot():
    """A class whose maps spread evenly off the object draws more than the others' to every
    place far from the object, where their halos do not reach: no place of its own."""
    kept = sampled([None] * 4)
    for c in (1, 2, 3):  # a halo: mass off the object falls with the distance from it
        samples, maps = kept[c]["m"].ordered()
        grid = maps.view(-1, GRID, GRID)
        near = torch.nn.functional.max_pool2d(grid.isnan().float()[:, None], 5, 1, 2)[:, 0]
        halo = torch.where(grid.isnan(), grid, grid * (0.1 + 5 * near))
        kept[c]["m"] = MapSample(1000, 0)
        kept[c]["m"].update(samples, halo.flatten(1) / halo.nansum((1, 2))[:, None])
    plain = window_lifts(kept[0]["m"].ordered()[1].numpy())[:, 0]  # the top-left window
    halos = window_lifts(kept[1]["m"].ordered()[1].numpy())[:, 0]
    assert np.nanmean(plain) > 2 * np.nanmean(halos)  # plain lifts would find a "hotspot"
    assert found(kept) == {}


@pytest.mark.parametrize("seed", range(4))
def test_maps_without_a_spot_give_no_hotspot(seed):
    assert found(sampled([None] * 4, seed=seed)) == {}


def test_the_window_is_chosen_on_one_half_and_tested_on_the_other():
    chosen_only = sampled([TOP_LEFT, None, None, None], only="first")
    spots = class_hotspots(chosen_only, ["m"], CONFIG, size=SIZE)
    assert (spots[0]["m"].row, spots[0]["m"].col) in {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert not has_hotspot(spots[0]["m"], CONFIG)  # the held-out half has no spot
    assert spots[0]["m"].n + sum(first_half(chosen_only[0]["m"].samples, 0)) <= 120
    tested_only = sampled([TOP_LEFT, None, None, None], only="second")
    assert found(tested_only) == {}  # the choosing half points nowhere


def test_a_place_the_class_maps_draw_to_on_any_image_is_no_hotspot():
    """The control: the class's maps (as target) on other classes' images, which lack its
    content. A spot they show too is the map's own, not a cue in the class's images."""
    kept = sampled([TOP_LEFT, None, None, None])
    _, with_spot, masks = scene(60, TOP_LEFT, seed=7, first=1000)
    _, without, _ = scene(60, None, seed=7, first=1000)
    cells = excluded_cells(masks)

    def tested(prior: torch.Tensor):
        spots = class_hotspots(kept, ["m"], CONFIG, size=SIZE, priors={0: {"m": prior}})
        return spots[0]["m"]

    assert has_hotspot(tested(off_object_maps(without, cells)), CONFIG)
    assert not has_hotspot(tested(off_object_maps(with_spot, cells)), CONFIG)
    too_few = tested(off_object_maps(without[:5], cells[:5]))  # cannot tell: no hotspot
    assert too_few.n_prior == 5 and too_few.p == 1.0 and not has_hotspot(too_few, CONFIG)


def test_the_result_depends_neither_on_the_batch_order_nor_on_a_resume():
    kept = sampled([TOP_LEFT, None, None])
    again = {}
    for c, by_method in kept.items():
        samples, maps = by_method["m"].ordered()
        evidence = ClassEvidence.bounded(2, off_object={"m": MapSample(1000, 0)})
        for start in range(len(samples) - 30, -30, -30):  # other batches, other order
            part = slice(max(start, 0), start + 30)
            evidence.off_object["m"].update(samples[part], maps[part])
        resumed = evidence.empty()
        resumed.load(evidence.state())
        again[c] = resumed.off_object

    def described(spots):  # NaN is not equal to itself; the dicts hold None
        return {c: {m: h.to_dict() for m, h in by.items()} for c, by in spots.items()}

    assert described(class_hotspots(again, ["m"], CONFIG, size=SIZE)) == described(
        class_hotspots(kept, ["m"], CONFIG, size=SIZE)
    )


def hotspot_of(kept):
    return class_hotspots(kept, ["m"], CONFIG, size=SIZE)[0]["m"]


def test_a_hotspot_is_attribution_evidence_only_for_a_trusted_method():
    spot = hotspot_of(sampled([TOP_LEFT, None, None, None]))
    passed = ClassResult(0, "circle", 120, 0.9, "pass")
    warned = with_hotspots(passed, {"m": spot}, ["m"], CONFIG)
    assert warned.status == "warn" and [f.kind for f in warned.findings] == ["off_object_hotspot"]
    assert warned.findings[0].location == spot.box and warned.to_dict()["hotspots"]["m"]["p"]
    untrusted = with_hotspots(passed, {"m": spot}, [], CONFIG)
    assert untrusted.status == "pass" and untrusted.hotspots == {"m": spot}
    gap = Finding("swap_gap", "accuracy_lost_when_swapped", 0.9, 0.1, 120, ci=(0.8, 1.0))
    missed = Finding("maps_missed_cue", "driving_methods", 1.0, 0.0, 120)
    for before in (ClassResult(0, "circle", 120, 0.9, "warn", [gap]),
                   ClassResult(0, "circle", 120, 0.9, "flag", [gap, gap, missed])):  # fmt: skip
        after = with_hotspots(before, {"m": spot}, ["m"], CONFIG)
        assert after.status == "flag" and "maps_missed_cue" not in {f.kind for f in after.findings}


def test_a_hotspot_is_said_where_it_is():
    spot = hotspot_of(sampled([TOP_LEFT, None, None, None]))
    result = with_hotspots(ClassResult(0, "circle", 120, 0.9, "pass"), {"m": spot}, ["m"], CONFIG)
    finding = from_dict(FindingRecord, result.to_dict()["findings"][0], "findings[0]")
    said = sentence(finding, ["circle", "a", "b", "c"], confidence=0.95)
    assert "at the top-left corner" in said and "Mann-Whitney" in said


@pytest.fixture(scope="module")
def corner_run(tmp_path_factory):
    """A planted model whose first class reads white pixels, on images where only that
    class carries the white corner mark; the other classes read a grey that is everywhere."""
    from planted import BackgroundReader

    from auditor import audit
    from auditor.config import AuditConfig
    from auditor.lab.synthetic import SyntheticSpec, write_dataset
    from auditor.models import LoadedModel

    root = tmp_path_factory.mktemp("hotspot")
    spec = SyntheticSpec(artefact_rate=(1.0, 0, 0, 0), image_size=64, n_train=4, n_audit=200,
                         seed=5)  # fmt: skip
    data = write_dataset(spec, root)["audit"]
    net = BackgroundReader(4, tau=0.1)
    with torch.no_grad():
        net.match.prototypes.copy_(torch.tensor([[1.0, 1, 1], *[[0.5, 0.5, 0.5]] * 3]))
        net.fc.weight.copy_(torch.eye(4) * 10)
        net.fc.bias.zero_()
    config = AuditConfig(
        image_size=64, normalize="none", methods=("gradcam", "saliency"), class_model_steps=0,
        subgroup_maps=0, detect=DetectConfig(min_n=10, sanity_max_similarity=1.0),
    )  # fmt: skip
    return audit(LoadedModel(net.eval(), "corner", None), data=data, config=config)


@pytest.mark.slow
def test_a_planted_corner_reader_shows_its_hotspot_in_the_summary_and_the_report(corner_run):
    from auditor.report.render import render_html

    circle, *others = corner_run.summary.classes
    spots = {f.method: f for f in circle.findings if f.kind == "off_object_hotspot"}
    assert where(spots["gradcam"].location) == "top-left corner"  # the mark's place
    assert circle.hotspots["gradcam"]["box_px"][:2] <= [8, 8]
    assert set(circle.hotspots) == {"gradcam", "saliency"}
    assert not any(f.kind == "off_object_hotspot" for c in others for f in c.findings)
    assert "hotspot boxed in green" in render_html(corner_run)
