"""Checks that a user-given path exists, failing with a one-line message that says where it was expected."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserInputError


def require_root(data_root: Path | None, dataset: str, layout: str) -> Path:
    """Return data_root, or fail when the dataset needs one and none was given."""
    if data_root is None:
        raise UserInputError(f"{dataset} needs data_root: {layout}")
    return data_root


def require_dir(path: Path, hint: str) -> Path:
    """Return path when it is a directory; otherwise name it and say how it should have been made."""
    if not path.is_dir():
        raise UserInputError(f"missing folder {path}: {hint}")
    return path


def require_file(path: Path, hint: str) -> Path:
    """Return path when it is a file; otherwise name it and say how it should have been made."""
    if not path.is_file():
        raise UserInputError(f"missing file {path}: {hint}")
    return path
