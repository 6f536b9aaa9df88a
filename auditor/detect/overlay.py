"""The hijack test by mean backgrounds: each class's mean background drawn over other images.

The swap's hijack test (:func:`auditor.detect.hijack.hijack_test`) pastes other classes'
objects onto this class's object-free backgrounds. A cue drawn *over* the object (a
watermark across the middle of the image, as ImageNet-W draws it) leaves the donor
background together with the object, so that test cannot see it. This one builds each
class's **mean background**: per pixel, the mean over the class's images whose object (its
mask, dilated by the swap's margin) leaves that pixel out. Nothing is filled in, so the
object's mask is enough where the swap needs its box (a blurred fill in the object's outline
would leave its shape behind); the mask leaves more of a mark that crosses the object
uncovered. A pattern fixed to the image frame survives the mean wherever some image's object
leaves it uncovered; objects and textures at random places average out. The class's mean
background minus the mean of the reference classes' (those whose backgrounds identify no
class, else every other class) is its **overlay**; added to other classes' right-answered
images, over their objects too, it asks whether this class's frame-fixed pattern moves other
objects to this class, against the reference classes' overlays on the same images (called
that class, or this one: the stricter, as the swap's test holds it).

Pure tensor functions and counts; the model's answers come from
:mod:`auditor.runner.overlays`.
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from auditor.config import DetectConfig
from auditor.detect.hijack import HijackTest, held_against


def mean_backgrounds(
    inputs: torch.Tensor, regions: torch.Tensor, labels: torch.Tensor, k: int
) -> torch.Tensor:
    """Per class, each pixel's mean over the class's images whose object ``regions`` leave
    it out (0 where every region covers it, or the class has no image).

    inputs (Tensor[N, C, H, W]), regions (Tensor[N, H, W] bool), labels (Tensor[N])
    -> Tensor[k, C, H, W]
    """
    off = (~regions)[:, None].to(inputs.dtype)
    one_hot = torch.nn.functional.one_hot(labels.long(), k).to(inputs.dtype)  # Tensor[N, k]
    total = torch.einsum("nk,nchw->kchw", one_hot, inputs * off)
    count = torch.einsum("nk,nchw->kchw", one_hot, off)
    return total / count.clamp_min(1)


def reference_classes(c: int, present: Collection[int], neutral: Collection[int]) -> list[int]:
    """The classes class ``c``'s overlay is held against: the ``neutral`` ones with images
    but ``c``; every other class with images when none is."""
    return sorted(d for d in neutral if d != c and d in present) or sorted(
        d for d in present if d != c
    )


def overlays(
    means: torch.Tensor, present: Collection[int], neutral: Collection[int]
) -> torch.Tensor:
    """Each class's mean background minus the mean of its reference classes' (zero for a
    class without images or without reference).

    means (Tensor[k, C, H, W]) -> Tensor[k, C, H, W]
    """
    out = torch.zeros_like(means)
    for c in present:
        references = reference_classes(c, present, neutral)
        if references:
            out[c] = means[c] - means[references].mean(0)
    return out


def overlay_plan(labels: torch.Tensor, k: int, per_image: int, *, seed: int = 0) -> torch.Tensor:
    """Which classes' overlays each image carries: every other class when there are at most
    ``per_image``, else ``per_image`` of them drawn at random (seeded), never its own.

    labels (Tensor[N]) -> Tensor[N, M] long, M = min(k - 1, per_image)
    """
    m = max(0, min(k - 1, per_image))
    order = torch.rand(len(labels), k, generator=torch.Generator().manual_seed(seed))
    order[torch.arange(len(labels)), labels.long()] = float("inf")  # its own class last
    return order.argsort(1)[:, :m]


def overlay_tests(
    answers: torch.Tensor,
    plan: torch.Tensor,
    labels: torch.Tensor,
    right: torch.Tensor,
    k: int,
    neutral: Collection[int],
    config: DetectConfig,
    *,
    min_cell: int = 5,
) -> list[HijackTest]:
    """Per class ``c`` with ``min_cell`` images on each side, a :class:`HijackTest`
    (``view="overlay"``): of the right-answered images of other classes that carried ``c``'s
    overlay, ``called`` were answered ``c``; against the same kind of images under the
    reference classes' overlays, answered that class (``pull="background"``) or ``c``
    (``pull="class"``), whichever is more; one-sided Fisher and Newcombe's CI.

    answers, plan (Tensor[N, M]: the answer under, and the class of, each overlay),
    labels, right (Tensor[N], Tensor[N] bool); ``k``: the model's classes.
    """
    present = sorted({int(c) for c in labels.tolist()})
    tests = []
    for c in range(k):
        others = (right & (labels != c))[:, None]
        on_c = others & (plan == c)
        references = reference_classes(c, present, neutral)
        kind = "neutral" if references and set(references) <= set(neutral) else "other"
        on_ref = others & torch.isin(plan, torch.tensor(references, dtype=plan.dtype))
        n, ref_n = int(on_c.sum()), int(on_ref.sum())
        if min(n, ref_n) < min_cell:
            continue
        called = int((on_c & (answers == c)).sum())
        background = int((on_ref & (answers == plan)).sum())
        anyway = int((on_ref & (answers == c)).sum())
        tests.append(held_against(c, (called, n), kind, ref_n, background, anyway, config,
                                  view="overlay"))  # fmt: skip
    return tests
