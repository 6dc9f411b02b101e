"""Shift consistency (Zhang, ICML 2019, "Making convolutional networks shift-invariant again"): how often the
top-1 prediction stays the same when the input is translated, between two random translations of each image.

Zhang's released evaluation takes two random 224-pixel windows of a 256-pixel centre crop, each window offset by
(dy, dx) drawn uniformly from {0, ..., 31} (about 1/7 of the side). Images here have no larger view to crop, so
each view is the image shifted circularly (`torch.roll`, which keeps every pixel; the form Chaman & Dokmanic,
CVPR 2021, use on CIFAR) by (dy, dx) drawn uniformly from {0, ..., P}; P defaults to 4 pixels for 32-pixel images,
about the same fraction of the side, and scales with the size (`default_max_shift`). Offsets are drawn per image
and view from a seeded generator, so a result depends on neither the batch size nor the number of processes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import UserInputError

REFERENCE_SIZE, REFERENCE_SHIFT = 32, 4
"""P = 4 pixels at 32 pixels; other sizes scale it."""


def default_max_shift(height: int, width: int) -> int:
    """round(4 * min(H, W) / 32), at least 1: 1 px for 8-pixel digits, 4 for 28 or 32 pixels, 28 for 224."""
    return max(1, round(REFERENCE_SHIFT * min(height, width) / REFERENCE_SIZE))


def draw_offsets(count: int, max_shift: int, seed: int = 0) -> Tensor:
    """(count, 2 views, 2) int64 shifts (dy, dx), each uniform on {0, ..., max_shift}, from a generator of `seed`."""
    if max_shift < 0:
        raise UserInputError(f"the maximum shift must be at least 0 pixels, got {max_shift}")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, max_shift + 1, (count, 2, 2), generator=generator)


def roll_images(images: Tensor, offsets: Tensor) -> Tensor:
    """Each image (B, C, H, W) rolled circularly down by offsets[b, 0] and right by offsets[b, 1] pixels."""
    _, _, height, width = images.shape
    offsets = offsets.to(images.device)
    rows = (torch.arange(height, device=images.device) - offsets[:, :1]) % height  # (B, H): source row of each row
    cols = (torch.arange(width, device=images.device) - offsets[:, 1:]) % width
    batch = torch.arange(images.size(0), device=images.device)[:, None, None, None]
    channel = torch.arange(images.size(1), device=images.device)[None, :, None, None]
    return images[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


@torch.no_grad()
def shift_agreement(predict: Callable[[Tensor], Tensor], images: Tensor, offsets: Tensor) -> Tensor:
    """(B,) bool: whether the top-1 class of `predict` (images -> scores) agrees on the two views of each image
    given by offsets (B, 2, 2); both views go through one call."""
    if images.dim() != 4 or offsets.shape != (images.size(0), 2, 2):
        raise UserInputError(f"need images (B, C, H, W) and offsets (B, 2, 2), got {tuple(images.shape)} and "
                             f"{tuple(offsets.shape)}")
    views = torch.cat([roll_images(images, offsets[:, 0]), roll_images(images, offsets[:, 1])])
    first, second = predict(views).argmax(dim=1).chunk(2)
    return first == second


def shift_consistency(predict: Callable[[Tensor], Tensor], images: Tensor, max_shift: int | None = None,
                      seed: int = 0) -> float:
    """Shift consistency (%) of `predict` over a batch of images, P = max_shift or `default_max_shift`."""
    shift = default_max_shift(*images.shape[-2:]) if max_shift is None else max_shift
    agree = shift_agreement(predict, images, draw_offsets(images.size(0), shift, seed))
    return 100.0 * agree.double().mean().item()
