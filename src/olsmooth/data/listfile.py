"""The paper's list format `relative/path.jpg;label` and the `listfile` dataset built from two such files."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..errors import UserInputError
from .bundle import BuildOptions, DatasetBundle, DatasetSpec
from .paths import require_file, require_root
from .samples import Samples, SplitSamples, labelled_split
from .transforms import fine_grained_preset

LAYOUT = "a folder holding train.txt and test.txt (lines 'relative/path.jpg;label') and the images"


def parse_list(text: str, source: str) -> Samples:
    """Parse list-file text; a malformed line is a user error 'SOURCE:LINE: ...'; blank lines are skipped."""
    samples = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        path, sep, label = line.rpartition(";")
        path, label = path.strip(), label.strip()
        if not sep or not path:
            raise UserInputError(f"{source}:{lineno}: expected 'relative/path;label', got {line!r}")
        if PurePosixPath(path).is_absolute():
            raise UserInputError(f"{source}:{lineno}: image path {path!r} must be relative")
        if not (label.isascii() and label.isdigit()):
            raise UserInputError(f"{source}:{lineno}: label {label!r} is not a non-negative integer")
        samples.append((path, int(label)))
    return samples


def read_list_file(path: Path) -> Samples:
    """Parse one list file from disk."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read list file {path}: {exc}") from None
    return parse_list(text, str(path))


def _image_dir(root: Path) -> Path:
    """Images are relative to DATA_ROOT/images when that folder exists, else to DATA_ROOT."""
    return root / "images" if (root / "images").is_dir() else root


def _read_split(data_root: Path | None) -> tuple[Path, SplitSamples]:
    root = require_root(data_root, "listfile", LAYOUT)
    lists = [read_list_file(require_file(root / name, f"expected {LAYOUT}")) for name in ("train.txt", "test.txt")]
    return root, labelled_split(lists[0], lists[1], str(root))


def _build(opts: BuildOptions) -> DatasetBundle:
    root, split = _read_split(opts.data_root)
    preset = fine_grained_preset(opts.image_size, opts.channels)
    return split.to_bundle("listfile", _image_dir(root), preset, opts.train_augment)


def _info(data_root: Path | None, split: str) -> dict[str, int]:
    return _read_split(data_root)[1].info()


SPEC = DatasetSpec("images named by DATA_ROOT/train.txt and test.txt ('path;label' lines), paper preset",
                   _build, _info)
