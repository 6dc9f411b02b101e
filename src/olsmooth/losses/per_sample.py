"""Plumbing for losses with one stored row per training sample (PS-KD, ELR): the sample-index check, and making
the stores of all processes equal when each process wrote the rows of its own samples."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

SYNC_CHUNK_ELEMENTS = 1 << 22
"""Rows are all-reduced across processes in chunks of about this many floats (16 MiB), bounding the extra memory."""


def checked_sample_index(index: Tensor | None, batch: int, num_samples: int, check_values: bool = True) -> Tensor:
    """`index` as int64 after checking it holds one integer per sample and (with `check_values`, one host sync)
    that every value lies in [0, num_samples); a ValueError naming the problem otherwise."""
    if index is None:
        raise ValueError("this loss needs each sample's index in the training set: call loss(logits, target, index=)")
    if index.shape != (batch,) or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(f"index must be ({batch},) integers, got {tuple(index.shape)} {index.dtype}")
    index = index.long()
    if check_values and batch:
        low, high = torch.stack(torch.aminmax(index)).tolist()
        if not 0 <= low <= high < num_samples:
            raise ValueError(f"sample indices must lie in [0, {num_samples - 1}], got values from {low} to {high}")
    return index


def distributed(process_group: Any = None) -> bool:
    """Whether torch.distributed runs with more than one process (in `process_group`)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(process_group) > 1


@torch.no_grad()
def share_written_rows(store: Tensor, written: Tensor, process_group: Any = None) -> Tensor:
    """Give every process the rows any process wrote: all-reduce, chunk by chunk in float32, the sum of the rows
    each process marked in `written` and how many marked each. A row written by one process takes its value
    exactly; one written by several (as DistributedSampler's padding repeats samples) their mean; the others stay.
    `store` (N, K) is updated in place; returns the mask of rows written anywhere (equal on every process)."""
    counts = written.float()
    dist.all_reduce(counts, group=process_group)
    step = max(1, SYNC_CHUNK_ELEMENTS // max(1, store.size(1)))
    for start in range(0, store.size(0), step):
        rows = store[start:start + step]
        summed = torch.where(written[start:start + step].unsqueeze(1), rows.float(), 0.0)
        dist.all_reduce(summed, group=process_group)
        count = counts[start:start + step].unsqueeze(1)
        rows.copy_(torch.where(count > 0, summed / count.clamp(min=1.0), rows.float()))
    return counts > 0
