"""A dataset over images already in memory (digits, Fashion-MNIST), picklable for DataLoader workers."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset):
    """N×C×H×W image tensor plus integer labels; `targets` may be replaced (e.g. by noisy labels)."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int],
                 transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), self.targets[index]
