"""The one dataset class every source builds, image loading, the sample-index wrapper and cheap label access."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..errors import UserInputError


def load_image(path: str) -> Image.Image:
    """Open an image as RGB; an unreadable file is a user error naming the file, on one line."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except UnidentifiedImageError:
        reason = "not a recognised image format, or corrupt"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    raise UserInputError(f"cannot read image {path}: {' '.join(reason.split())}")


class LabelledDataset(Dataset):
    """Items with integer labels: image tensors held in memory, or image paths decoded on access by `load`.

    `targets` may be replaced (e.g. by noisy labels); picklable for DataLoader workers when `load` and
    `transform` are.
    """

    def __init__(self, items: Sequence[Any], targets: Sequence[int], transform: Callable[[Any], torch.Tensor],
                 load: Callable[[Any], Any] | None = None) -> None:
        if len(items) != len(targets):
            raise ValueError(f"{len(items)} items but {len(targets)} labels")
        self.items = items
        self.targets = [int(t) for t in targets]
        self.transform = transform
        self.load = load

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        return self.transform(item if self.load is None else self.load(item)), self.targets[index]


def image_list_dataset(samples: Sequence[tuple[str, int]], transform: Callable[[Any], torch.Tensor]) -> LabelledDataset:
    """Images named by path with their labels, decoded as RGB on access."""
    return LabelledDataset([path for path, _ in samples], [label for _, label in samples], transform, load_image)


class WithIndex(Dataset):
    """Yields (image, label, index) from a dataset of (image, label), for losses that keep per-sample state.

    The index is the position in the wrapped dataset, 0..len-1: wrap a Subset to number its samples afresh,
    or subset the wrapper to keep the indices of the full set.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image, label = self.dataset[index]
        return image, label, int(index)


class Relabelled(Dataset):
    """A dataset of (image, label) with its labels replaced (noisy training labels); `targets` are the new ones."""

    def __init__(self, dataset: Dataset, targets: Sequence[int] | np.ndarray) -> None:
        if len(targets) != len(dataset):
            raise ValueError(f"{len(targets)} labels for a dataset of {len(dataset)} samples")
        self.dataset = dataset
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.dataset[index]
        return image, int(self.targets[index])


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """All labels of a dataset as int64, from `targets` (through Subset, ConcatDataset and WithIndex) without
    decoding any image; a dataset without `targets` is iterated once."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    if isinstance(dataset, WithIndex):
        return dataset_labels(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return np.concatenate([dataset_labels(part) for part in dataset.datasets])
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return np.asarray(targets, dtype=np.int64)
    return np.fromiter((int(dataset[i][1]) for i in range(len(dataset))), dtype=np.int64, count=len(dataset))
