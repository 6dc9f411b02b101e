"""Character sets a glyph dataset can be built from, the seeded choice of K classes, and where to get fonts for them."""

from __future__ import annotations

import string

import numpy as np

from ...errors import UserInputError

# GB2312 level 1 (the 3,755 most frequent hanzi): rows 16-55 of the 94x94 table, bytes 0xB0A1..0xD7F9 in EUC-CN.
GB2312_LEVEL1_ROWS = range(16, 56)
LATIN62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

# Debian packages whose faces cover each charset (named by the error when too few fonts cover it).
CJK_PACKAGES = ("fonts-noto-cjk", "fonts-arphic-ukai", "fonts-arphic-uming", "fonts-arphic-gbsn00lp",
                "fonts-arphic-gkai00mp", "fonts-wqy-microhei", "fonts-wqy-zenhei", "fonts-droid-fallback",
                "fonts-hanazono")
LATIN_PACKAGES = ("fonts-dejavu-core", "fonts-dejavu-extra", "fonts-liberation2", "fonts-freefont-ttf")


def gb2312_level1() -> str:
    """The 3,755 characters of GB2312 level 1 in code order, decoded with Python's gb2312 codec."""
    chars = []
    for row in GB2312_LEVEL1_ROWS:
        for cell in range(1, 95):
            try:
                chars.append(bytes([0xA0 + row, 0xA0 + cell]).decode("gb2312"))
            except UnicodeDecodeError:  # row 55 ends at cell 89
                continue
    return "".join(chars)


CHARSETS = {
    "gb2312-1": ("GB2312 level 1, 3,755 simplified Chinese characters", gb2312_level1, CJK_PACKAGES),
    "latin62": ("digits and Latin letters, 62 characters (small tests)", lambda: LATIN62, LATIN_PACKAGES),
}


def charset_chars(name: str) -> str:
    """The characters of a named charset, in its own order."""
    if name not in CHARSETS:
        raise UserInputError(f"unknown charset {name!r}; use one of {', '.join(CHARSETS)}")
    return CHARSETS[name][1]()


def charset_packages(name: str) -> tuple[str, ...]:
    """Debian font packages that cover a charset."""
    return CHARSETS[name][2]


def choose_classes(chars: str, classes: int | None, seed: int) -> str:
    """K characters drawn without replacement by a generator seeded with `seed` alone, kept in charset order;
    all of them when `classes` is None."""
    if classes is None:
        return chars
    if not 2 <= classes <= len(chars):
        raise UserInputError(f"--classes must lie in 2..{len(chars)} for this charset, got {classes}")
    picked = np.random.default_rng([seed, 0]).choice(len(chars), size=classes, replace=False)
    return "".join(chars[i] for i in sorted(picked))
