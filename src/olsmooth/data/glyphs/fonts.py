"""Font faces for glyph datasets: discovery (font folders or fontconfig), .ttc face indices, names, character
coverage from the cmap, and the design group of each face (near-copies share a group, so a split never divides them)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ...errors import UserInputError

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
# Searched when fontconfig's fc-list is not installed.
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")

# Families whose glyphs are copies or derivatives of each other's (measured on GB2312 level 1, docs/datasets.md):
# Source Han = Noto CJK (regional and Mono faces draw the same hanzi); UKai derives from KaitiM, UMing from
# SungtiL/Mingti; WenQuanYi Micro Hei from Droid Sans Fallback. First match wins.
DESIGN_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"^(noto sans (mono )?cjk|source han sans)", "Noto Sans CJK"),
    (r"^(noto serif cjk|source han serif)", "Noto Serif CJK"),
    (r"^ar pl (ukai|zenkai|kaitim|kaiti)", "AR PL Kai"),
    (r"^ar pl (uming|sungti|mingti|shanheisun)", "AR PL Ming"),
    (r"^(droid sans fallback|wenquanyi micro hei)", "Droid Sans Fallback"),
    (r"^wenquanyi zen hei", "WenQuanYi Zen Hei"),
    (r"^hanamin", "HanaMin"),
)
# Words dropped from other family names to find their design: regional variants, weights, widths.
_VARIANT_WORDS = re.compile(
    r"\b(cn|hk|tw|mbe|jp|kr|sc|tc|gb|thin|extralight|ultralight|light|demilight|semilight|regular|book|normal|"
    r"medium|semibold|demibold|bold|extrabold|ultrabold|black|heavy|oblique|italic|condensed|expanded|sharp)\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class FontFace:
    """One face of a font file: its path, its index in a collection (0 for a plain .ttf/.otf) and its names."""

    file: str
    index: int
    family: str
    style: str

    @property
    def name(self) -> str:
        """Family and style, e.g. 'Noto Sans CJK SC Bold'."""
        return f"{self.family} {self.style}"

    @property
    def group(self) -> str:
        """The design this face belongs to (see `design_group`)."""
        return design_group(self.family)


def design_group(family: str) -> str:
    """The design of a family: a known family of near-copies (DESIGN_FAMILIES), else the family name without
    regional tags, weights, widths and slants ('DejaVu Sans Mono' stays apart from 'DejaVu Sans')."""
    for pattern, group in DESIGN_FAMILIES:
        if re.match(pattern, family.strip(), re.IGNORECASE):
            return group
    return " ".join(_VARIANT_WORDS.sub(" ", family).split()) or family


def font_files(sources: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    """Font files under the given files or folders (recursively), or all that fontconfig knows when none given;
    resolved, deduplicated and sorted."""
    if sources:
        files: list[Path] = []
        for source in sources:
            path = Path(source).expanduser()
            if path.is_file():
                files.append(path)
            elif path.is_dir():
                files += [p for p in path.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file()]
            else:
                raise UserInputError(f"--fonts {path}: no such file or folder")
    elif shutil.which("fc-list"):
        listing = subprocess.run(["fc-list", "--format", "%{file}\\n"], capture_output=True, text=True, check=False)
        files = [Path(line) for line in listing.stdout.splitlines() if line.lower().endswith(FONT_SUFFIXES)]
    else:
        folders = [Path(d).expanduser() for d in SYSTEM_FONT_DIRS]
        files = [p for d in folders if d.is_dir() for p in d.rglob("*") if p.suffix.lower() in FONT_SUFFIXES]
    return sorted({p.resolve() for p in files if p.is_file()})


def _names(font) -> tuple[str, str]:
    """(family, style) from the name table: the typographic names (IDs 16, 17) where present, else IDs 1, 2."""
    table = font["name"]
    family = table.getDebugName(16) or table.getDebugName(1) or "unknown"
    style = table.getDebugName(17) or table.getDebugName(2) or "Regular"
    return family.strip(), style.strip()


def _face_count(path: Path) -> int:
    """Faces in a font file: numFonts of a collection's header ('ttcf', version, numFonts), else 1."""
    with open(path, "rb") as handle:
        header = handle.read(12)
    return struct.unpack(">I", header[8:12])[0] if header[:4] == b"ttcf" and len(header) == 12 else 1


def read_faces(path: Path, codes: Sequence[int]) -> list[tuple[FontFace, dict[int, str] | str]]:
    """Every face of a font file with the glyph names its cmap gives the code points `codes` (those it maps to
    .notdef or not at all left out), or the reason it cannot be read."""
    from fontTools.ttLib import TTFont, TTLibError

    try:
        count = _face_count(path)
    except OSError as exc:
        return [(FontFace(str(path), 0, path.stem, "?"), f"unreadable font: {exc}")]
    faces: list[tuple[FontFace, dict[int, str] | str]] = []
    for index in range(count):
        try:
            font = TTFont(str(path), fontNumber=index, lazy=True)
            family, style = _names(font)
            cmap = font.getBestCmap() or {}
            font.close()
            glyphs = {code: cmap[code] for code in codes if cmap.get(code, ".notdef") != ".notdef"}
            faces.append((FontFace(str(path), index, family, style), glyphs))
        except (OSError, TTLibError, AssertionError, KeyError, ValueError, struct.error) as exc:
            faces.append((FontFace(str(path), index, path.stem, "?"), f"unreadable face: {exc}"))
    return faces


@dataclass(frozen=True)
class Coverage:
    """Faces that map every character of a charset, and the others with the reason each was left out."""

    covering: list[FontFace]
    skipped: list[tuple[FontFace, str]]


def faces_covering(files: Sequence[Path], chars: str) -> Coverage:
    """Split the faces of `files` into those whose cmap maps every character to a glyph of its own and the rest.

    A face that draws two characters with one glyph (a fallback font's placeholder box) is left out, and so is a
    face with the same family and style as an earlier one (a copy or link of the same font).
    """
    needed = [ord(c) for c in chars]
    covering: list[FontFace] = []
    skipped: list[tuple[FontFace, str]] = []
    seen: set[tuple[str, str]] = set()
    for path in files:
        for face, codes in read_faces(path, needed):
            if isinstance(codes, str):
                skipped.append((face, codes))
                continue
            missing = [chr(code) for code in needed if code not in codes]
            shared = len(needed) - len({codes[code] for code in needed if code in codes}) - len(missing)
            if (face.family, face.style) in seen:
                skipped.append((face, "duplicate of an earlier face with the same family and style"))
            elif missing:
                skipped.append((face, f"lacks {len(missing)} of {len(chars)} characters (e.g. {missing[0]!r})"))
            elif shared:
                skipped.append((face, f"draws {shared} of the characters with another one's glyph"))
            else:
                seen.add((face.family, face.style))
                covering.append(face)
    return Coverage(covering, skipped)
