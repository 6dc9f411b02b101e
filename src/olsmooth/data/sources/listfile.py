"""The `listfile` dataset: DATA_ROOT/train.txt and test.txt name the images (see formats/list_file.py)."""

from __future__ import annotations

from pathlib import Path

from ..formats.list_file import FORMAT, read_list_file
from ..paths import require_file, require_root
from ..samples import SplitSamples, labelled_split
from ..spec import BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import fine_grained_preset

LAYOUT = f"a folder holding train.txt and test.txt (lines {FORMAT}) and the images"


def _image_dir(root: Path) -> Path:
    """Images are relative to DATA_ROOT/images when that folder exists, else to DATA_ROOT."""
    return root / "images" if (root / "images").is_dir() else root


def _read_split(data_root: Path | None) -> tuple[Path, SplitSamples]:
    root = require_root(data_root, "listfile", LAYOUT)
    lists = [read_list_file(require_file(root / name, f"expected {LAYOUT}")) for name in ("train.txt", "test.txt")]
    return root, labelled_split(lists[0], lists[1], str(root))


def _build(opts: BuildOptions) -> DatasetBundle:
    root, split = _read_split(opts.data_root)
    image_dir = _image_dir(root)
    split.require_images(image_dir, str(root))
    preset = fine_grained_preset(opts.image_size, opts.channels, opts.input_norm)
    return split.to_bundle("listfile", image_dir, preset, opts.augment)


def _info(data_root: Path | None, split: str | None) -> dict[str, int]:
    return _read_split(data_root)[1].info()


SPEC = DatasetSpec("images named by DATA_ROOT/train.txt and test.txt ('path;label' or 'path label' lines), "
                   "paper preset", _build, _info,
                   defaults=dict(model="resnet18", epochs=30, batch_size=64, lr=0.01, weight_decay=1e-4))
