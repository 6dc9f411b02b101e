"""List files: one labelled image a line, `relative/path.jpg;label` (the paper's) or `relative/path.jpg label`
(Caffe, mmpretrain)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ...errors import UserInputError

FORMAT = "'relative/path;label' or 'relative/path label'"


def _split_line(line: str) -> tuple[str, str] | None:
    """(path, label) at the last ';', or, in a line without ';', at the last run of whitespace."""
    if ";" in line:
        path, _, label = line.rpartition(";")
        return path.strip(), label.strip()
    parts = line.rsplit(maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else None


def parse_list(text: str, source: str) -> list[tuple[str, int]]:
    """Parse list-file text; a malformed line is a user error 'SOURCE:LINE: ...'; blank lines are skipped."""
    samples = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = _split_line(line)
        if fields is None or not fields[0]:
            raise UserInputError(f"{source}:{lineno}: expected {FORMAT}, got {line!r}")
        path, label = fields
        if PurePosixPath(path).is_absolute():
            raise UserInputError(f"{source}:{lineno}: image path {path!r} must be relative")
        if not (label.isascii() and label.isdigit()):
            raise UserInputError(f"{source}:{lineno}: label {label!r} is not a non-negative integer")
        samples.append((path, int(label)))
    return samples


def read_list_file(path: Path) -> list[tuple[str, int]]:
    """Parse one list file from disk."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read list file {path}: {exc}") from None
    return parse_list(text, str(path))
