"""Datasets by name: `build_datasets`, `list_datasets` and the cheap `dataset_info` the trainer calls."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

from ..errors import UserInputError
from . import cifar, digits, fashion_mnist, fine_grained, folders, listfile
from .bundle import BuildOptions, DatasetBundle, DatasetSpec

SPLITS = ("paper", "official")
PathLike = str | os.PathLike[str]

_SPECS: dict[str, DatasetSpec] = {
    "digits": digits.SPEC,
    "fashion-mnist": fashion_mnist.SPEC,
    **cifar.SPECS,
    **folders.SPECS,
    "listfile": listfile.SPEC,
    **fine_grained.SPECS,
}


def list_datasets() -> dict[str, str]:
    """Dataset names with a one-line description each."""
    return {name: spec.description for name, spec in _SPECS.items()}


def _spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("_", "-")
    if key not in _SPECS:
        raise UserInputError(f"unknown dataset {name!r}; available: {', '.join(_SPECS)}")
    return _SPECS[key]


def _root(data_root: PathLike | None) -> Path | None:
    return None if data_root is None or str(data_root) == "" else Path(data_root).expanduser()


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserInputError(f"unknown split {split!r}; use 'paper' or 'official'")
    return split


def build_datasets(name: str, data_root: PathLike | None = None, split: str = "paper",
                   image_size: int | None = None, channels: int | None = None, download: bool = False,
                   train_augment: bool = True) -> DatasetBundle:
    """Train and test datasets of a registered dataset, with its preset transforms and any overrides."""
    spec = _spec(name)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
            raise UserInputError(f"image_size must be a positive integer, got {image_size!r}")
        image_size = int(image_size)
    if channels not in (None, 1, 3):
        raise UserInputError(f"channels must be 1 or 3 (or unset for the native count), got {channels!r}")
    opts = BuildOptions(_root(data_root), _check_split(split), image_size, channels, download, train_augment)
    return spec.build(opts)


def dataset_info(name: str, data_root: PathLike | None = None, split: str = "paper") -> dict[str, int]:
    """Sizes {'train', 'test', 'classes'} without decoding any image (checks that the data is where expected)."""
    return _spec(name).info(_root(data_root), _check_split(split))
