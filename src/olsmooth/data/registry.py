"""Datasets by name: `build_datasets`, the cheap `dataset_info`, and each dataset's spec and training defaults."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from .sources import cifar, digits, fashion_mnist, fine_grained, folders, glyphs, listfile, synthetic
from .spec import AUGMENT_LEVELS, INPUT_NORMS, BuildOptions, DatasetBundle, DatasetSpec

PathLike = str | os.PathLike[str]

_SPECS: dict[str, DatasetSpec] = {
    "digits": digits.SPEC,
    "fashion-mnist": fashion_mnist.SPEC,
    **cifar.SPECS,
    **folders.SPECS,
    "listfile": listfile.SPEC,
    **fine_grained.SPECS,
    **synthetic.SPECS,
    "glyphs": glyphs.SPEC,
}


def list_datasets() -> dict[str, str]:
    """Dataset names with a one-line description each."""
    return {name: spec.description for name, spec in _SPECS.items()}


def canonical_dataset_name(name: str) -> str:
    """The registered name for `name`, ignoring case, surrounding blanks and '_' for '-' ('Fashion_MNIST')."""
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else None
    if key not in _SPECS:
        raise UserInputError(f"unknown dataset {name!r}; available: {', '.join(_SPECS)}")
    return key


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset (defaults, in_memory, splits, ...), by any spelling canonical_dataset_name
    accepts."""
    return _SPECS[canonical_dataset_name(name)]


def dataset_defaults(name: str) -> dict[str, Any]:
    """A fresh copy of the training options a dataset suggests: model, epochs, batch_size, lr, weight_decay."""
    return dict(dataset_spec(name).defaults)


def _root(data_root: PathLike | None) -> Path | None:
    return None if data_root is None or str(data_root) == "" else Path(data_root).expanduser()


def _split(name: str, spec: DatasetSpec, split: str | None) -> str | None:
    """The split to build: None picks the dataset's default; a dataset without splits accepts only None."""
    if split is None:
        return spec.splits[0] if spec.splits else None
    if not spec.splits:
        raise UserInputError(f"dataset {canonical_dataset_name(name)} has no splits to choose from; "
                             f"leave split unset (got {split!r})")
    if split not in spec.splits:
        raise UserInputError(f"unknown split {split!r} for {canonical_dataset_name(name)}; "
                             f"use one of {', '.join(spec.splits)}")
    return split


def _image_size(image_size: int | None) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) or image_size < 1:
        raise UserInputError(f"image_size must be a positive integer, got {image_size!r}")
    return int(image_size)


def build_datasets(name: str, data_root: PathLike | None = None, split: str | None = None,
                   image_size: int | None = None, channels: int | None = None, download: bool = False,
                   augment: str = "default", input_norm: str = "dataset") -> DatasetBundle:
    """Train and test datasets of a registered dataset, with its preset transforms and any overrides.

    split=None is the dataset's default split; augment is one of AUGMENT_LEVELS ('none' trains with the test
    transform); input_norm one of INPUT_NORMS.
    """
    spec = dataset_spec(name)
    if channels not in (None, 1, 3):
        raise UserInputError(f"channels must be 1 or 3 (or unset for the native count), got {channels!r}")
    if augment not in AUGMENT_LEVELS:
        raise UserInputError(f"unknown augment level {augment!r}; use one of {', '.join(AUGMENT_LEVELS)}")
    if input_norm not in INPUT_NORMS:
        raise UserInputError(f"unknown input normalisation {input_norm!r}; use one of {', '.join(INPUT_NORMS)}")
    opts = BuildOptions(_root(data_root), _split(name, spec, split), _image_size(image_size), channels, download,
                        augment, input_norm)
    return spec.build(opts)


def dataset_info(name: str, data_root: PathLike | None = None, split: str | None = None) -> dict[str, int]:
    """Sizes {'train', 'test', 'classes'} without decoding any image (checks that the data is where expected)."""
    spec = dataset_spec(name)
    return spec.info(_root(data_root), _split(name, spec, split))
