"""Aligned geometry: a mask drawn on the original covers the same object after each transform."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from test_data_fixtures import box_ann, write_coco, write_image

from auditor.data import AuditDataset, read_dataset
from auditor.data.transforms import GEOMETRIES, AuditTransform


def drawn(width: int, height: int, box: tuple[int, int, int, int], ellipse: bool):
    """A white shape on black, and its exact mask (bool ndarray[H, W])."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if ellipse else draw.rectangle)(box, fill=255)
    mask = np.asarray(image) > 0
    return image.convert("RGB"), mask


def edge_band(mask: torch.Tensor) -> torch.Tensor:
    """Pixels within 1 px of the boundary of ``mask`` (Tensor[H, W] bool)."""
    x = mask.float()[None, None]
    dilated = torch.nn.functional.max_pool2d(x, 3, 1, 1)[0, 0] > 0
    eroded = -torch.nn.functional.max_pool2d(-x, 3, 1, 1)[0, 0] > 0
    return dilated & ~eroded


def assert_covers_object(inputs: torch.Tensor, masks: torch.Tensor) -> None:
    bright = inputs.mean(0) > 0.5
    stray = (bright ^ masks) & ~(edge_band(masks) | edge_band(bright))
    assert masks.dtype == torch.bool and masks.any()
    assert not stray.any(), f"{int(stray.sum())} pixels disagree away from the object's edge"


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("size", [24, 61, 128])
def test_drawn_mask_covers_the_object_after_each_geometry(geometry, size):
    image, mask = drawn(90, 50, (30, 10, 60, 40), ellipse=True)
    inputs, masks, ignore = AuditTransform(size, "none", geometry=geometry).apply(image, mask)
    assert inputs.shape == (3, size, size) and masks.shape == ignore.shape == (size, size)
    assert_covers_object(inputs, masks)
    assert set(masks.unique().tolist()) <= {False, True}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(12, 96),
    height=st.integers(12, 96),
    corner=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)),
    extent=st.tuples(st.floats(0.3, 0.5), st.floats(0.3, 0.5)),
    ellipse=st.booleans(),
    size=st.integers(16, 72),
    geometry=st.sampled_from(GEOMETRIES),
)
def test_any_drawn_shape_stays_aligned(width, height, corner, extent, ellipse, size, geometry):
    x0, y0 = int(corner[0] * width), int(corner[1] * height)
    box = (x0, y0, x0 + int(extent[0] * width), y0 + int(extent[1] * height))
    image, mask = drawn(width, height, box, ellipse)
    transform = AuditTransform(size, "none", geometry=geometry)
    inputs, masks, ignore = transform.apply(image, mask)
    assert_covers_object(inputs, masks)
    _, as_ignore, _ = transform.apply(image, mask, mask)
    _, _, ignored = transform.apply(image, np.zeros_like(mask), mask)
    assert ignored.equal(as_ignore | ignore), "ignore must follow the mask's geometry"


def test_letterbox_pads_evenly_and_ignores_the_padding():
    image, mask = drawn(20, 10, (0, 0, 19, 9), ellipse=False)
    inputs, masks, ignore = AuditTransform(16, "imagenet", geometry="pad").apply(image, mask)
    rows = ignore.all(1)
    assert rows.tolist() == [True] * 4 + [False] * 8 + [True] * 4
    assert not ignore[4:12].any() and masks[4:12].all() and not masks[rows].any()
    assert inputs[:, rows].abs().max() == 0  # the normalisation mean


def test_stretch_has_no_padding():
    image, mask = drawn(20, 10, (5, 2, 14, 7), ellipse=False)
    _, masks, ignore = AuditTransform(16, "none", geometry="stretch").apply(image, mask)
    assert not ignore.any() and masks.any()


def test_a_thin_object_at_the_edge_survives_the_letterbox(tmp_path):
    write_image(tmp_path / "wide.png", 60, 10)
    images = [{"id": 1, "file_name": "wide.png", "height": 10, "width": 60}]
    info = read_dataset(write_coco(tmp_path, images, [box_ann(1, 3, [0, 0, 5, 10])]))
    pad = AuditDataset(info.records, AuditTransform(16, geometry="pad"))[0]
    assert pad["skip"] == "" and pad["masks"].any() and pad["ignore"].any()


def test_default_call_keeps_the_two_output_form():
    image, mask = drawn(10, 10, (2, 2, 7, 7), ellipse=False)
    inputs, masks = AuditTransform(20, "none")(image, mask)
    assert inputs.shape == (3, 20, 20) and masks.sum() == 144


def test_unknown_geometry_is_refused():
    with pytest.raises(ValueError, match="geometry"):
        AuditTransform(16, geometry="zoom")  # type: ignore[arg-type]
