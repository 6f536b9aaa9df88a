"""The hijack test by mean backgrounds (:mod:`auditor.detect.overlay`): each class's mean
background drawn over other classes' images. Checked against float64 loops, counts by
hand, and a planted model that follows a mark drawn across the middle of the image, over
the object, where every mask-based view carries the mark away with the object."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import fisher_exact
from test_detect import as_record, challenge_frame
from torch import nn

from auditor.config import AuditConfig, DetectConfig
from auditor.detect import class_results, verdict
from auditor.detect.hijack import HijackTest
from auditor.detect.interventions import dilate, margin
from auditor.detect.overlay import mean_backgrounds, overlay_plan, overlay_tests, overlays
from auditor.detect.stats_util import newcombe
from auditor.report.words import reasons
from auditor.runner.overlays import Overlaid, overlay_hijacks
from auditor.runner.pipeline import transform_of
from auditor.runner.preflight import Probe


def test_mean_backgrounds_match_a_float64_loop():
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(9, 3, 5, 6, generator=g)
    regions = torch.rand(9, 5, 6, generator=g) > 0.6
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 0, 1, 1])  # class 3 has no image
    got = mean_backgrounds(inputs, regions, labels, 4)
    x = inputs.double()
    for c in range(4):
        for ch in range(3):
            for i in range(5):
                for j in range(6):
                    values = [x[n, ch, i, j] for n in range(9)
                              if labels[n] == c and not regions[n, i, j]]  # fmt: skip
                    want = sum(values) / len(values) if values else 0.0
                    assert float(got[c, ch, i, j]) == pytest.approx(float(want), abs=1e-6)


def test_an_overlay_is_the_class_mean_minus_its_reference_classes_mean():
    means = torch.arange(4 * 2, dtype=torch.float32).reshape(4, 2, 1, 1) ** 2
    drawn = overlays(means, present=[0, 1, 2], neutral={1, 2})
    assert torch.equal(drawn[0], means[0] - (means[1] + means[2]) / 2)
    assert torch.equal(drawn[1], means[1] - means[2])  # a neutral class: the other neutral one
    assert torch.equal(drawn[3], torch.zeros_like(means[3]))  # no images: no overlay
    every = overlays(means, present=[0, 1, 2], neutral=set())  # none neutral: every other
    assert torch.equal(every[2], means[2] - (means[0] + means[1]) / 2)


def test_each_image_carries_other_classes_overlays_never_its_own():
    labels = torch.tensor([0, 1, 2, 3, 3])
    plan = overlay_plan(labels, 4, per_image=16)
    assert plan.shape == (5, 3)
    for row, label in zip(plan.tolist(), labels.tolist()):
        assert sorted(row) == [c for c in range(4) if c != label]
    many = overlay_plan(torch.arange(50), 50, per_image=16, seed=3)
    assert many.shape == (50, 16)
    assert all(len(set(row)) == 16 and i not in row for i, row in enumerate(many.tolist()))
    assert torch.equal(many, overlay_plan(torch.arange(50), 50, per_image=16, seed=3))


def test_overlay_test_counts_by_hand():
    """Four classes of 10 images; every image carries the three other overlays. Class 0's
    overlay makes 4 images of each other class answer 0, but one of those 12 images (of
    class 3) was wrong to begin with: 11 of 29. Under the neutral classes' overlays (1, 2,
    3) the same images are called the overlay's class 2 times and 0 five times: the
    reference is the larger, 5, of the 58 (image, neutral overlay) pairs of right images."""
    labels = torch.arange(4).repeat_interleave(10)
    plan = overlay_plan(labels, 4, per_image=16)
    answers = labels[:, None].expand_as(plan).clone()
    right = torch.ones(40, dtype=torch.bool)
    right[30] = False
    for c in (1, 2, 3):
        for i in range(4):
            answers[c * 10 + i][plan[c * 10 + i] == 0] = 0
    answers[10][plan[10] == 2] = 2  # called the overlay's class
    answers[11][plan[11] == 2] = 2
    for i in range(5):
        answers[20 + i][plan[20 + i] == 3] = 0  # called 0 whatever the overlay
    (test, *_) = overlay_tests(answers, plan, labels, right, 4, {1, 2, 3}, DetectConfig())
    # the same counts by a slow loop over (image, overlay) pairs
    n = called = ref_n = ref_background = ref_class = 0
    for i in range(40):
        if labels[i] == 0 or not right[i]:
            continue
        for j in range(3):
            cls, said = int(plan[i, j]), int(answers[i, j])
            if cls == 0:
                n, called = n + 1, called + (said == 0)
            else:
                ref_n += 1
                ref_background += said == cls
                ref_class += said == 0
    assert (n, called, ref_n, ref_background, ref_class) == (29, 11, 58, 2, 5)
    assert (test.donor, test.n, test.called) == (0, 29, 11)
    assert (test.reference_n, test.reference_called, test.pull) == (58, 5, "class")
    assert test.view == "overlay" and test.reference == "neutral"
    p = fisher_exact([[11, 18], [5, 53]], alternative="greater").pvalue
    assert test.p == pytest.approx(p)
    assert test.ci == pytest.approx(newcombe((11, 29), (5, 58), 0.95))
    assert HijackTest.from_dict(test.to_dict()) == test


class MarkFollower(nn.Module):
    """Three classes by the brightest value of each colour channel (red, green, blue), plus,
    when ``follows``, a detector of the stripes (:func:`stripes`) that adds 2 to class 0's
    logit: class 0's images carry the stripes, so class 0 is right on its own colour and
    any other object with the stripes drawn over it is called 0."""

    def __init__(self, template: torch.Tensor, follows: bool) -> None:
        super().__init__()
        self.register_buffer("template", template)
        self.weight = nn.Parameter(torch.tensor(2.0 if follows else 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        colour = x.amax((2, 3))  # Tensor[N, 3]
        mark = (x * self.template).sum((1, 2, 3)) / self.template.pow(2).sum()
        return colour + self.weight * torch.stack([mark, 0 * mark, 0 * mark], 1)


def marked_images(n: int = 30, size: int = 32) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """n images per class (classes 0, 1, 2 in turn): a grey ground with faint noise, an 8x8
    square of the class's colour at a random place; class 0's images also carry the
    stripes, over the object where they meet. Images in [0, 1], masks bool."""
    g = torch.Generator().manual_seed(1)
    inputs, masks = [], []
    for label in range(3):
        for _ in range(n):
            image = 0.4 + 0.05 * torch.rand(3, size, size, generator=g)
            y, x = (int(v) for v in torch.randint(0, size - 8, (2,), generator=g))
            mask = torch.zeros(size, size, dtype=torch.bool)
            mask[y : y + 8, x : x + 8] = True
            image[label][mask] = 1.0
            if label == 0:
                image = image + stripes(size)
            inputs.append(image.clamp(0, 1))
            masks.append(mask)
    return inputs, masks


def stripes(size: int = 32) -> torch.Tensor:
    """A zero-mean mark fixed to the frame: +-0.25 columns across rows 12-19."""
    template = torch.zeros(3, size, size)
    template[:, 12:20] = 0.25 * (torch.arange(size) % 2 * 2 - 1).float()
    return template


def answered(net: nn.Module, probe: Probe) -> dict[int, bool]:
    """Whether ``net`` answers each probe image right, by dataset position (the stream's)."""
    right = net(probe.inputs).argmax(1) == probe.labels
    return dict(zip(probe.positions.tolist(), right.tolist()))


def marked_probe(n: int = 30) -> Probe:
    inputs, masks = marked_images(n)
    labels = torch.arange(3).repeat_interleave(n)
    return Probe(torch.stack(inputs), torch.stack(masks), labels, torch.arange(len(labels)))


@torch.no_grad()
def test_a_mark_over_the_object_that_other_objects_follow_is_found_without_masks():
    probe = marked_probe()
    config = AuditConfig(image_size=32, batch_size=16, normalize="none")
    transform = transform_of(config)
    net = MarkFollower(stripes(), follows=True)
    assert bool((net(probe.inputs).argmax(1) == probe.labels).all())  # right on its images
    found = overlay_hijacks(net, lambda: probe, 3, {1, 2}, config, transform, answered(net, probe))
    tests = {t.donor: t for t in found.tests}
    assert set(tests) == {0, 1, 2}
    assert (tests[0].called, tests[0].n) == (60, 60)  # every other object follows the stripes
    assert tests[0].ci[0] > config.detect.min_gap
    assert tests[1].called == tests[2].called == 0
    # the stream's answers decide which images count: green (positions 30-59) answered wrong
    wrong_green = answered(net, probe) | dict.fromkeys(range(30, 60), False)
    fewer = overlay_hijacks(net, lambda: probe, 3, {1, 2}, config, transform, wrong_green)
    assert [(t.called, t.n) for t in fewer.tests if t.donor == 0] == [(30, 30)]
    clean = MarkFollower(stripes(), follows=False)
    quiet = overlay_hijacks(
        clean, lambda: probe, 3, {1, 2}, config, transform, answered(clean, probe)
    )
    assert all(t.called == 0 for t in quiet.tests) and quiet.pictures == {}

    def never() -> Probe:
        raise AssertionError("the sample is not loaded when the test is off")

    off = AuditConfig(overlay_images=0)
    assert overlay_hijacks(net, never, 3, {1, 2}, off, transform, {}) == Overlaid()
    # 90 images x 16 overlays spread over 300 classes: about 5 images per class's overlay
    # at best, before the model is right on any; no class can be tested, so nothing is run
    assert overlay_hijacks(lambda x: never(), lambda: probe, 300, set(), config, transform, {}) == (
        Overlaid()
    )


@torch.no_grad()
def test_the_pictures_show_the_mean_background_and_an_image_it_moved():
    """Only the class whose test meets the bar gets pictures: its mean background, where
    the stripes alternate by half the range in rows 12-19 and nothing else differs by more
    than the noise; and the first image of another class (dataset position 30, the first
    of class 1) with the overlay drawn over it, as the model saw it."""
    probe = marked_probe()
    config = AuditConfig(image_size=32, batch_size=16, normalize="none")
    net = MarkFollower(stripes(), follows=True)
    found = overlay_hijacks(net, lambda: probe, 3, {1, 2}, config, transform_of(config),
                            answered(net, probe))  # fmt: skip
    assert set(found.pictures) == {0}
    shown = found.pictures[0]
    mean = shown["mean_background"].float() / 255
    assert shown["mean_background"].dtype == torch.uint8 and mean.shape == (3, 32, 32)
    swing = (mean[:, :, 1::2] - mean[:, :, 0::2]).mean(0)  # odd minus even columns
    assert float(swing[12:20].mean()) == pytest.approx(0.5, abs=0.03)
    assert float(swing[:12].abs().max()) < 0.06 and float(swing[20:].abs().max()) < 0.06
    assert (shown["drawn_over_label"], shown["drawn_over_position"]) == (1, 30)
    masks = probe.masks.bool()
    means = mean_backgrounds(probe.inputs, dilate(masks, margin(masks)), probe.labels, 3)
    want = (probe.inputs[30] + overlays(means, [0, 1, 2], {1, 2})[0]).clamp(0, 1)
    assert torch.equal(shown["drawn_over"], (want * 255).round().to(torch.uint8))


def test_a_mean_background_hijack_warns_a_class_the_swap_cannot_see():
    """b passes on the swapped rows (its backgrounds move no object); its mean background
    drawn over the others' objects makes 30 of 60 called b against 6 of 120 under the
    neutral classes' overlays: a hijack of its own, a warning. A lift whose interval does
    not clear ``min_gap`` changes nothing."""
    names = ["a", "b", "c", "d"]
    config = DetectConfig()
    samples = challenge_frame()
    assert class_results(samples, names, ["gradcam"], config)[1].status == "pass"
    p = fisher_exact([[30, 30], [6, 114]], alternative="greater").pvalue
    test = HijackTest(1, 60, 30, "neutral", 120, 6, p, newcombe((30, 60), (6, 120), 0.95),
                      "background", "overlay")  # fmt: skip
    results = class_results(samples, names, ["gradcam"], config, overlays=[test])
    (hijack,) = results[1].findings
    assert results[1].status == "warn" and hijack.kind == "hijack"
    assert hijack.statistic == "other_objects_called_class_under_its_mean_background"
    assert (hijack.value, hijack.reference, hijack.n) == (0.5, 0.05, 60)
    assert p <= hijack.p <= 8 * p  # BH over both views' tests
    stored = results[1].to_dict()
    assert HijackTest.from_dict(stored["overlay_hijack"]) == test
    (said,) = reasons(as_record(stored), names, confidence=0.95)
    assert said.startswith(
        "used though not needed: with this class's mean background "
        "drawn over them, the model calls 50% of the other classes' objects"
    )
    assert "under the mean backgrounds of classes whose backgrounds identify no class" in said
    weak_p = fisher_exact([[10, 50], [6, 114]], alternative="greater").pvalue
    weak = HijackTest(1, 60, 10, "neutral", 120, 6, weak_p, newcombe((10, 60), (6, 120), 0.95),
                      "background", "overlay")  # fmt: skip
    assert weak.ci[0] < config.min_gap
    unchanged = class_results(samples, names, ["gradcam"], config, overlays=[weak])
    assert [r.status for r in unchanged] == [r.status for r in class_results(
        samples, names, ["gradcam"], config)]  # fmt: skip
    assert verdict(unchanged) == verdict(class_results(samples, names, ["gradcam"], config))


def test_an_audit_stores_the_mean_background_test_and_warns_on_the_followed_mark(tmp_path):
    """End to end, from PNG files and box annotations: the stripes of class 0 move every
    other object to class 0; the audit says so in a hijack finding, stores every class's
    mean-background test, times it, and the report says what the hijack predicts."""
    from PIL import Image
    from test_data_fixtures import box_ann, write_coco

    from auditor.models import LoadedModel
    from auditor.report.render import render_html
    from auditor.runner.pipeline import audit

    inputs, masks = marked_images(n=30)
    images, annotations = [], []
    for i, (image, mask) in enumerate(zip(inputs, masks), start=1):
        name = f"{i:03d}.png"
        pixels = (image.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(tmp_path / name)
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]
        images.append({"id": i, "file_name": name, "width": 32, "height": 32})
        annotations.append(box_ann(i, (i - 1) // 30 + 1, box))
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(["red", "green", "blue"])]
    data = write_coco(tmp_path, images, annotations, categories)
    config = AuditConfig(image_size=32, batch_size=30, normalize="none", methods=("saliency",),
                         subgroup_maps=0, hotspot_maps=0, class_model_steps=0)  # fmt: skip
    net = LoadedModel(MarkFollower(stripes(), follows=True).eval(), "mark-follower", None)
    run = audit(net, data=data, config=config)
    classes = run.summary.classes
    assert all(c.overlay_hijack is not None for c in classes)
    assert classes[0].overlay_hijack["called"] == classes[0].overlay_hijack["n"] == 60
    assert classes[1].overlay_hijack["called"] == classes[2].overlay_hijack["called"] == 0
    hijacks = [(c.name, f.statistic) for c in classes for f in c.findings if f.kind == "hijack"]
    assert [name for name, _ in hijacks] == ["red"] and classes[0].status != "pass"
    assert run.run_info["timings"]["overlay_s"] > 0
    shown = {name: e["mean_background"] for name, e in run.evidence["classes"].items()
             if "mean_background" in e}  # fmt: skip
    assert list(shown) == ["red"] and shown["red"]["drawn_over_label"] == 1
    assert shown["red"]["drawn_over_file"].endswith("031.png")  # the first green image
    html = render_html(run)
    assert "used though not needed" in html
    assert "Mean background of “red”" in html
    assert "An image of “green” (" in html and "031.png) with it drawn over: called “red”" in html


def test_a_class_both_views_find_keeps_the_swap_finding():
    """d's backgrounds move other objects to d on the swapped rows (the swap's hijack); a
    stronger mean-background test of d does not replace that finding: objects on its real
    backgrounds are the more direct statement."""
    names = ["a", "b", "c", "d"]
    config = DetectConfig()
    p = fisher_exact([[60, 0], [0, 120]], alternative="greater").pvalue
    test = HijackTest(3, 60, 60, "neutral", 120, 0, p, newcombe((60, 60), (0, 120), 0.95),
                      "background", "overlay")  # fmt: skip
    results = class_results(challenge_frame(), names, ["gradcam"], config, overlays=[test])
    (hijack,) = [f for f in results[3].findings if f.kind == "hijack"]
    assert hijack.statistic == "other_objects_called_class_on_its_backgrounds"
