"""A split given as labelled image paths: label and path checks, class names from folders, the bundle it makes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from ..errors import UserInputError
from .datasets import image_list_dataset
from .spec import DatasetBundle
from .transforms import Preset

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

    def require_images(self, image_dir: Path, source: str) -> None:
        """Fail, on one line naming the first missing image and the count, unless every listed image exists."""
        paths = [image_dir / path for path, _ in self.train + self.test]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise UserInputError(f"{source}: {len(missing)} of {len(paths)} listed images are missing, "
                                 f"the first is {missing[0]}")

    def to_bundle(self, name: str, image_dir: Path, preset: Preset, augment: str) -> DatasetBundle:
        """Datasets that load the images from image_dir with the preset's transforms at an augmentation level."""
        def rooted(samples: Samples) -> Samples:
            return [(str(image_dir / path), label) for path, label in samples]

        train = image_list_dataset(rooted(self.train), preset.train_transform(augment))
        test = image_list_dataset(rooted(self.test), preset.test)
        return DatasetBundle.from_preset(name, preset, train, test, self.class_names)


def labelled_split(train: Samples, test: Samples, source: str,
                   class_names: list[str] | None = None) -> SplitSamples:
    """Check labels cover 0..K-1 (K = len(class_names), else max label + 1), K >= 2, and build the split."""
    for split, samples in (("train", train), ("test", test)):
        if not samples:
            raise UserInputError(f"{source}: the {split} split has no samples")
    labels = {label for _, label in train} | {label for _, label in test}
    k = len(class_names) if class_names is not None else max(labels) + 1
    if k < 2:
        only = f" ({class_names[0]!r})" if class_names else ""
        raise UserInputError(f"{source}: found a single class{only}; classification needs at least 2")
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
