"""Image files: refusing paths that escape their root, and decoding any mode to RGB."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from auditor.data.entries import SampleSkip, SkipReason

_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def resolve_inside(root: Path, name: str) -> Path | None:
    """``root / name`` when it stays inside ``root`` after following symlinks, else ``None``.

    Absolute names (POSIX or Windows) and empty names are refused outright; ``..`` parts and
    symlinks are refused when they lead outside. Nothing is opened or read.
    """
    if not name or "\x00" in name:
        return None
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        return None
    if PureWindowsPath(name).drive:
        return None
    path = root / name
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        return None
    return path if inside else None


def load_image(path: Path, *, annotated: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB, or raise :class:`SampleSkip` with the reason.

    The EXIF orientation is applied, as image viewers and annotation tools show the image;
    except when ``annotated`` (width, height) matches the stored pixels and not the oriented
    ones: then the annotations were drawn on the stored pixels, and those are used.
    """
    if not path.is_file():
        raise SampleSkip(SkipReason.MISSING_FILE, f"{path.name} not found")
    if path.stat().st_size == 0:
        raise SampleSkip(SkipReason.EMPTY_FILE, f"{path.name} is empty")
    try:
        with _strict_decoding(), Image.open(path) as image:
            image.load()
            return to_rgb(_oriented(image, annotated))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SampleSkip(SkipReason.UNREADABLE_IMAGE, f"{path.name}: {exc}") from None


def _oriented(image: Image.Image, annotated: tuple[int, int] | None) -> Image.Image:
    oriented = ImageOps.exif_transpose(image)
    if annotated is not None and oriented.size != annotated and image.size == annotated:
        return image
    return oriented


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """Refuse truncated files while decoding, whatever the process-wide PIL setting says.

    weasyprint sets ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` when it is imported (the CLI
    imports it for the report), which would turn a cut-off file into half a picture.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and 32-bit grayscale are rescaled by their peak (not clipped), transparent pixels
    are composited on black, CMYK and palettes go through PIL's own conversion.
    """
    if image.mode in _DEEP_MODES:
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low, peak = min(array.min(), 0.0), array.max()
        scale = (peak - low) or 1.0
        image = Image.fromarray(((array - low) / scale * 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    ):
        image = image.convert("RGBA")
        canvas = Image.new("RGB", image.size, (0, 0, 0))
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    return image.convert("RGB")


def read_label_png(path: Path) -> np.ndarray:
    """The raw values of a label PNG (palette indices for VOC masks): ``ndarray[H, W]``."""
    if not path.is_file():
        raise SampleSkip(SkipReason.MISSING_FILE, f"mask {path.name} not found")
    try:
        with Image.open(path) as image:
            image.load()
            gray = image.convert("L") if image.mode in ("RGB", "RGBA", "CMYK") else image
            array = np.asarray(gray)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SampleSkip(SkipReason.BAD_ANNOTATION, f"mask {path.name}: {exc}") from None
    if array.ndim != 2:
        raise SampleSkip(SkipReason.BAD_ANNOTATION, f"mask {path.name} is not single-channel")
    return array
