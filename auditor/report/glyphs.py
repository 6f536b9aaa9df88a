"""Which characters this machine's fonts can draw, so that a name in a script no installed
font covers is said plainly in the report instead of printed as empty boxes, and the charts
never ask matplotlib for a glyph it lacks.

The PDF renderer finds fonts through fontconfig and falls back from font to font per
character, so a character is drawable when any installed outline font has it. The charts
draw each text in one font file: the first of :attr:`Fonts.files` (matplotlib's own DejaVu
Sans, the report's font, first) that has all its characters.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import matplotlib
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

REPLACEMENT = "□"
"""What a chart draws for a character no font has (DejaVu Sans has it)."""
PREFERRED = "DejaVuSans.ttf"


@dataclass(frozen=True)
class Fonts:
    """Font files and the code points each has (a ``.ttc`` collection: its first face)."""

    files: tuple[tuple[Path, frozenset[int]], ...]

    @classmethod
    def installed(cls) -> Fonts:
        """The outline fonts fontconfig (or the system's font folders) lists."""
        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / PREFERRED
        found = []
        for path in [str(bundled), *sorted(font_manager.findSystemFonts())]:
            try:
                found.append((Path(path), frozenset(FT2Font(path).get_charmap())))
            except (OSError, RuntimeError, ValueError):  # a font FreeType cannot open
                continue
        return cls(tuple(found))

    @cached_property
    def drawable(self) -> frozenset[int]:
        """The code points some font has."""
        return frozenset().union(*(chars for _, chars in self.files))

    def missing(self, text: str) -> str:
        """The characters of ``text`` that no font has, each once, in order."""
        out: list[str] = []
        for char in text:
            if char not in out and _visible(char) and ord(char) not in self.drawable:
                out.append(char)
        return "".join(out)

    def font_for(self, text: str) -> tuple[Path | None, str]:
        """The font file to draw ``text`` with, and the text with every character that font
        lacks replaced by :data:`REPLACEMENT` (None: matplotlib's default font, when no
        font is known)."""
        if not self.files:
            return None, text
        needed = {ord(c) for c in text if _visible(c)}
        for path, chars in self.files:
            if needed <= chars:
                return path, text
        path, chars = self.files[0]
        return path, "".join(c if not _visible(c) or ord(c) in chars else REPLACEMENT for c in text)


def _visible(char: str) -> bool:
    """A character that needs a glyph (not a space, control or format character)."""
    return not char.isspace() and unicodedata.category(char)[0] not in ("C", "Z")
