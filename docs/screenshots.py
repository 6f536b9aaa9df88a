"""Draw the documentation's pictures of the demo's report: ``make screenshots``.

Runs the demo (``auditor demo --out reports/demo``) when ``reports/demo`` holds no run, then
renders the shortcut model's ``report.html`` in headless Chromium, offline:

- ``docs/images/report.png``: the top of the report, as it opens: the cover with the
  verdict, the method and the class table;
- ``docs/images/report-classes.png``: the class table and the table of objects on other
  classes' backgrounds;
- ``docs/images/report-class.png``: the section of the first flagged class, down to its
  first two exemplars.

A part of the page is drawn alone from a copy of the report, in a temporary folder, whose
other sections are hidden by one added style rule; the run itself is never touched. Each
picture is trimmed of the empty page below its content and, when over the size limit,
scaled down, so the pictures stay small enough to commit.

    .venv/bin/python docs/screenshots.py [--demo reports/demo] [--out docs/images]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1200
MAX_BYTES = 400_000
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--force-device-scale-factor=1",
)  # fmt: skip
FLAGGED_SECTION = re.compile(
    r'<section class="class-section" id="(class-\d+)">\s*<h2>[^<]*<span class="badge badge-flag">'
)


@dataclass(frozen=True)
class Shot:
    """One picture: ``keep`` names the sections drawn alone (None: the page as it opens)."""

    name: str
    height: int
    keep: tuple[str, ...] | None = None
    hide: str = ""  # a CSS selector of further parts to hide


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=ROOT / "reports" / "demo")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium is missing: apt-get install -y chromium", file=sys.stderr)
        return 1
    report = args.demo / "shortcut" / "report.html"
    if not (args.demo / "shortcut" / "summary.json").is_file():
        demo(args.demo)
    page = report.read_text(encoding="utf-8")
    args.out.mkdir(parents=True, exist_ok=True)
    for shot in shots(page):
        path = args.out / shot.name
        draw(chromium, page, shot, path)
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{path.stat().st_size / 1000:.0f} kB")  # fmt: skip
    return 0


def demo(out: Path) -> None:
    """Run the demo into ``out`` (minutes: it trains two models on the CPU)."""
    print(f"{out} holds no run: running the demo first (several minutes)", flush=True)
    auditor = Path(sys.executable).parent / "auditor"
    subprocess.run([str(auditor), "demo", "--out", str(out)], cwd=ROOT, check=True)


def shots(page: str) -> list[Shot]:
    """The pictures to draw from this page (the class section only when a class is flagged)."""
    found = [
        Shot("report.png", height=2400, keep=("verdict", "method", "classes")),
        Shot("report-classes.png", height=1600, keep=("classes", "backgrounds")),
    ]
    flagged = FLAGGED_SECTION.search(page)
    if flagged is None:
        print("no flagged class in the report: report-class.png not drawn", file=sys.stderr)
    else:
        section = flagged.group(1)
        found.append(Shot(
            "report-class.png", height=2400, keep=(section,),
            hide=f"#{section} .exemplar + .exemplar ~ *",  # after the first two exemplars
        ))  # fmt: skip
    return found


def draw(chromium: str, page: str, shot: Shot, path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        html.write_text(alone(page, shot.keep, shot.hide), encoding="utf-8")
        raw = Path(tmp) / "shot.png"
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
             f"--window-size={WIDTH},{shot.height}", f"--screenshot={raw}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        image = Image.open(raw).convert("RGB")
    save_small(trimmed(image), path)


def alone(page: str, keep: tuple[str, ...] | None, hide: str = "") -> str:
    """The page with every top-level part but the sections ``keep`` hidden, and ``hide``."""
    rules = []
    if keep is not None:
        shown = ", ".join(f"body > #{k}" for k in keep)
        rules.append("body > * { display: none !important; }")
        rules.append(f"{shown} {{ display: block !important; }}")
    if hide:
        rules.append(f"{hide} {{ display: none !important; }}")
    return page.replace("</head>", f"<style>{' '.join(rules)}</style></head>", 1)


def trimmed(image: Image.Image, margin: int = 24) -> Image.Image:
    """``image`` without the blank page below (and beside) its content."""
    background = Image.new("RGB", image.size, image.getpixel((image.width - 1, image.height - 1)))
    box = ImageChops.difference(image, background).getbbox()
    if box is None:
        raise SystemExit("the screenshot is empty: nothing was drawn")
    return image.crop((0, 0, image.width, min(box[3] + margin, image.height)))


def save_small(image: Image.Image, path: Path) -> None:
    """Save as PNG with a 256-colour palette, scaled down until it fits ``MAX_BYTES``."""
    scale = 1.0
    while True:
        size = (round(image.width * scale), round(image.height * scale))
        small = image if scale == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or scale < 0.4:
            return
        scale *= 0.85


if __name__ == "__main__":
    sys.exit(main())
