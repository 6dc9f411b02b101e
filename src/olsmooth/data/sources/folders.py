"""Class-per-folder trees (`imagenet`, `imagefolder`): DATA_ROOT/train/CLASS/... and DATA_ROOT/val/CLASS/..."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from ...errors import UserInputError
from ..paths import require_dir, require_root
from ..samples import Samples, SplitSamples, labelled_split
from ..spec import BuildOptions, DatasetBundle, DatasetSpec
from ..transforms import imagenet_preset

LAYOUT = "a folder with train/CLASS/*.jpg and val/CLASS/*.jpg (or test/CLASS/*.jpg), one subfolder per class"


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def _scan(root: Path, split: str, classes: list[str]) -> Samples:
    """Image files under root/split/CLASS (recursively, sorted), as paths relative to root."""
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for name in _class_folders(root / split):
        if name not in index:
            raise UserInputError(f"class folder {root / split / name} has no counterpart in {root / 'train'}")
        for dirpath, dirnames, filenames in os.walk(root / split / name, followlinks=True):
            dirnames.sort()
            rel = Path(dirpath).relative_to(root)
            samples += [(str(rel / f), index[name]) for f in sorted(filenames) if f.lower().endswith(IMG_EXTENSIONS)]
    if not samples:
        raise UserInputError(f"no images found under {root / split}; expected {LAYOUT}")
    return samples


def read_folder_split(data_root: Path | None, dataset: str) -> tuple[Path, SplitSamples]:
    """Scan both splits; classes are the sorted train subfolders, names are the folder names."""
    root = require_root(data_root, dataset, LAYOUT)
    require_dir(root / "train", f"expected {LAYOUT}")
    test = "val" if (root / "val").is_dir() else "test"
    require_dir(root / test, f"expected {LAYOUT}")
    classes = _class_folders(root / "train")
    split = labelled_split(_scan(root, "train", classes), _scan(root, test, classes), str(root), classes)
    return root, split


def _build(dataset: str, color_augment: bool, opts: BuildOptions) -> DatasetBundle:
    root, split = read_folder_split(opts.data_root, dataset)
    preset = imagenet_preset(opts.image_size, opts.channels, color_augment, opts.input_norm)
    return split.to_bundle(dataset, root, preset, opts.augment)


def _info(dataset: str, data_root: Path | None, split: str | None) -> dict[str, int]:
    return read_folder_split(data_root, dataset)[1].info()


SPECS = {
    "imagenet": DatasetSpec(
        "ImageNet as class folders under DATA_ROOT/train and DATA_ROOT/val; RandomResizedCrop, flip, "
        "ColorJitter 0.4, PCA lighting 0.1", partial(_build, "imagenet", True), partial(_info, "imagenet"),
        defaults=dict(model="resnet50", epochs=90, batch_size=64, lr=0.1, weight_decay=1e-4)),
    "imagefolder": DatasetSpec(
        "any class-folder tree under DATA_ROOT/train and DATA_ROOT/val (or test); RandomResizedCrop, flip",
        partial(_build, "imagefolder", False), partial(_info, "imagefolder"),
        defaults=dict(model="resnet18", epochs=30, batch_size=64, lr=0.01, weight_decay=1e-4)),
}
