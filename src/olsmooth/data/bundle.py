"""The value `build_datasets` returns and the options it passes to each dataset's builder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from torch.utils.data import Dataset

if TYPE_CHECKING:
    from .transforms import Preset


@dataclass(frozen=True)
class BuildOptions:
    """What the caller asked for, already validated by the registry."""

    data_root: Path | None
    split: str
    image_size: int | None
    channels: int | None
    download: bool
    train_augment: bool


@dataclass
class DatasetBundle:
    """Train and test datasets plus what a model and a trainer need to know about them."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_preset(cls, name: str, preset: Preset, train: Dataset, test: Dataset,
                    class_names: list[str]) -> DatasetBundle:
        """Bundle two datasets built with `preset`, taking the tensor format from it."""
        return cls(name, train, test, len(class_names), class_names, preset.channels, preset.image_size,
                   preset.mean, preset.std)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: a one-line description, a builder, and a cheap size query."""

    description: str
    build: Callable[[BuildOptions], DatasetBundle]
    info: Callable[[Path | None, str], dict[str, int]]
