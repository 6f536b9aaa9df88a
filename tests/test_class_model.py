"""Class-model visualisation: what a model draws for a class, with the engine's hygiene."""

from __future__ import annotations

import torch
from planted import BackgroundReader

from auditor.attribution.class_model import ClassModelOptions, class_model_images, displayable


def reader() -> BackgroundReader:
    """Four classes, each scoring pixels near its own prototype colour (a wide ``tau``, so
    that the zero image the ascent starts from is within reach of every class)."""
    model = BackgroundReader(4, tau=6.0)
    with torch.no_grad():
        model.match.prototypes.copy_(torch.tensor(
            [[-1.5, -0.5, 1.0], [-1.0, 0.5, -1.0], [1.2, 1.0, 0.0], [1.0, -1.0, -0.5]]
        ))  # fmt: skip
        model.fc.weight.copy_(torch.eye(4) * 10)
        model.fc.bias.zero_()
    return model.eval()


def test_a_background_reader_draws_its_classes_colours():
    model = reader()
    options = ClassModelOptions(steps=60, jitter=1, blur=0.5)
    images = class_model_images(model, [0, 1, 2, 3], image_size=16, options=options)
    colours = images.mean(dim=(2, 3))
    distance = torch.cdist(colours, model.match.prototypes.detach())
    assert distance.argmin(1).tolist() == [0, 1, 2, 3]


def test_no_grad_on_parameters_modes_restored_and_seeded():
    model = reader().train()
    model.relu.eval()
    options = ClassModelOptions(steps=5, seed=3)
    first = class_model_images(model, [1, 2], image_size=12, options=options)
    again = class_model_images(model, [1, 2], image_size=12, options=options)
    assert torch.equal(first, again) and first.shape == (2, 3, 12, 12)
    assert all(p.grad is None for p in model.parameters())
    assert model.training and not model.relu.training


def test_each_regulariser_can_be_turned_off(tiny_cnn):
    model = tiny_cnn  # random 3x3 convolutions: an ascent full of high frequencies
    plain = ClassModelOptions(steps=8, jitter=0, blur=0.0)
    smooth = ClassModelOptions(steps=8, jitter=0, blur=1.0, blur_every=2)
    a = class_model_images(model, [0], image_size=16, options=plain)
    b = class_model_images(model, [0], image_size=16, options=smooth)
    high = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert high(b) < high(a)  # blur removes high frequencies
    shown = displayable(a)
    assert shown.min() >= 0 and shown.max() <= 1
