"""Readers for the annotation files of the official archives (whitespace tables, MATLAB .mat), with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ...errors import UserInputError
from ..paths import require_file


class Entry(NamedTuple):
    """One 'KEY VALUE' line of a table file, with 'FILE:LINE' to name it in errors."""

    key: str
    value: str
    where: str


def read_table(path: Path, hint: str) -> list[Entry]:
    """Lines 'KEY VALUE...' (the value may hold spaces); blank lines skipped, a line without a value is an error."""
    require_file(path, hint)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None
    entries = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise UserInputError(f"{path}:{lineno}: expected 'KEY VALUE', got {line.strip()!r}")
        entries.append(Entry(parts[0], parts[1].strip(), f"{path}:{lineno}"))
    return entries


def read_lines(path: Path, hint: str) -> list[str]:
    """Non-blank lines of a text file, stripped."""
    require_file(path, hint)
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None


def parse_int(text: Any, where: str) -> int:
    """An integer field, or a user error naming where it came from."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UserInputError(f"{where}: expected an integer, got {text!r}") from None


def lookup(table: dict[str, Entry], key: str, path: Path) -> Entry:
    """The entry for key, or a user error saying which file lacks it."""
    if key not in table:
        raise UserInputError(f"{path}: no entry for image id {key}")
    return table[key]


def load_mat(path: Path, keys: Sequence[str], hint: str) -> dict[str, np.ndarray]:
    """Variables of a MATLAB file (squeezed, each at least 1-D); missing file, variable or scipy is a user error."""
    require_file(path, hint)
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserInputError(f"reading {path} needs scipy: pip install scipy") from None
    try:
        mat = loadmat(str(path), squeeze_me=True)
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:
        raise UserInputError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    missing = [key for key in keys if key not in mat]
    if missing:
        raise UserInputError(f"{path}: no variable {missing[0]!r}")
    return {key: np.atleast_1d(mat[key]) for key in keys}
