"""What a registered dataset declares (`DatasetSpec`), what its builder is given and what `build_datasets` returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from torch.utils.data import Dataset

from ..data_choices import AUGMENT_LEVELS, INPUT_NORMS, SPLITS, SUBSET_DRAWS

if TYPE_CHECKING:
    from .transforms import Preset

__all__ = ["AUGMENT_LEVELS", "INPUT_NORMS", "SPLITS", "SUBSET_DRAWS", "BuildOptions", "DatasetBundle", "DatasetSpec"]


@dataclass(frozen=True)
class BuildOptions:
    """What the caller asked for, already validated by the registry (split is None for datasets without splits)."""

    data_root: Path | None
    split: str | None
    image_size: int | None
    channels: int | None
    download: bool
    augment: str
    input_norm: str = "dataset"


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
    """A registered dataset: description, builder, cheap size query, training defaults and its choice of splits.

    `defaults` fills the training options a user leaves unset (model, epochs, batch_size, lr, weight_decay);
    `in_memory` says the data is held as tensors, so DataLoader workers would only add start-up time;
    `splits` names the train/test splits to choose from, the first being the default (empty: no choice).
    """

    description: str
    build: Callable[[BuildOptions], DatasetBundle]
    info: Callable[[Path | None, str | None], dict[str, int]]
    defaults: dict[str, Any]
    in_memory: bool = False
    splits: tuple[str, ...] = ()
