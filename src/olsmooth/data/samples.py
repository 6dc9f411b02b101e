"""A split given as labelled image paths: label checks, class names from folders, and the bundle it makes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from ..errors import UserInputError
from .bundle import DatasetBundle
from .image_dataset import ImageListDataset
from .transforms import Preset, Transform

Samples = list[tuple[str, int]]
_FOLDER_PREFIX = re.compile(r"^(\d+\.|n\d+-)")


@dataclass(frozen=True)
class SplitSamples:
    """Train and test (path relative to an image folder, 0-based label) lists and the class names."""

    train: Samples
    test: Samples
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes, K; labels run 0..K-1."""
        return len(self.class_names)

    def info(self) -> dict[str, int]:
        """Sizes as `dataset_info` reports them."""
        return {"train": len(self.train), "test": len(self.test), "classes": self.num_classes}

    def to_bundle(self, name: str, image_dir: Path, preset: Preset, train_augment: bool) -> DatasetBundle:
        """Datasets that load the images from image_dir with the preset's transforms."""
        def dataset(samples: Samples, transform: Transform) -> ImageListDataset:
            return ImageListDataset([(str(image_dir / path), label) for path, label in samples], transform)

        return DatasetBundle.from_preset(name, preset, dataset(self.train, preset.train_transform(train_augment)),
                                         dataset(self.test, preset.test), self.class_names)


def labelled_split(train: Samples, test: Samples, source: str,
                   class_names: list[str] | None = None) -> SplitSamples:
    """Check labels cover 0..K-1 (K = len(class_names), else max label + 1) and build the split."""
    for split, samples in (("train", train), ("test", test)):
        if not samples:
            raise UserInputError(f"{source}: the {split} split has no samples")
    labels = {label for _, label in train} | {label for _, label in test}
    k = len(class_names) if class_names is not None else max(labels) + 1
    outside = sorted(label for label in labels if not 0 <= label < k)
    if outside:
        raise UserInputError(f"{source}: label {outside[0]} is outside 0..{k - 1}")
    missing = sorted(set(range(k)) - labels)
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise UserInputError(f"{source}: labels must cover 0..{k - 1}, but no sample has label {shown}")
    return SplitSamples(train, test, class_names if class_names is not None else [str(i) for i in range(k)])


def class_name_from_folder(folder: str) -> str:
    """Readable class name from an archive folder name: '001.Black_footed_Albatross', 'n02085620-Chihuahua'."""
    return _FOLDER_PREFIX.sub("", folder)


def names_from_folders(samples: Sequence[tuple[str, int]]) -> list[str]:
    """Class names from the folders the images sit in; a label whose images sit in no folder keeps str(label)."""
    k = max(label for _, label in samples) + 1
    names = [str(i) for i in range(k)]
    named = set()
    for path, label in samples:
        folder = PurePosixPath(path).parent.name
        if folder and label not in named:
            names[label] = class_name_from_folder(folder)
            named.add(label)
    return names
