"""Image loading shared by every folder and list dataset, and the one dataset class they all use."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

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


class ImageListDataset(Dataset):
    """Images named by path with integer labels, decoded on access; `targets` may be replaced."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = [path for path, _ in samples]
        self.targets = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.paths[index])), self.targets[index]
