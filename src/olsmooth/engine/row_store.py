"""Rows of scores kept for a second look (temperature scaling re-reads them about 40 times) without holding the
N x K of them in memory: in memory up to a budget, beyond it in an anonymous temporary file, read back one stored
batch at a time. Labels and positions (O(N)) stay in memory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ..analysis.calibration import RowBuffer

MEMORY_BUDGET_BYTES = 64 * 2**20
"""A RowStore keeps its scores in memory up to this many bytes; past it, all of them move to a temporary file."""


class RowStore:
    """float32 score rows (n, K) with their labels and dataset positions, added batch by batch and read back in
    the same batches (`batches`), optionally only some rows. Memory: at most `memory_budget` bytes of scores
    (default MEMORY_BUDGET_BYTES), one batch while reading, and 2 numbers a row; the rest lies in a file of the
    temporary directory (TMPDIR) that is gone when the store is closed, or its process ends."""

    def __init__(self, num_classes: int, memory_budget: int | None = None) -> None:
        self.num_classes = int(num_classes)
        self.memory_budget = MEMORY_BUDGET_BYTES if memory_budget is None else int(memory_budget)
        self._in_memory: list[Tensor] = []
        self._sizes: list[int] = []
        self._labels = RowBuffer(2, torch.long)  # label, position
        self._file = None
        self.rows = 0

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the scores (and delete the file)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._in_memory = []

    @property
    def on_disk(self) -> bool:
        """Whether the scores went to the temporary file."""
        return self._file is not None

    def append(self, scores: Tensor, labels: Tensor, positions: Tensor) -> None:
        """Add a batch: scores (n, K) (kept as float32), labels (n,) and positions (n,) in the dataset."""
        scores = scores.detach().to("cpu", torch.float32).contiguous()
        if scores.dim() != 2 or scores.size(1) != self.num_classes:
            raise ValueError(f"scores of shape {tuple(scores.shape)} in a store of {self.num_classes} classes")
        if not self.on_disk and 4 * self.num_classes * (self.rows + len(scores)) > self.memory_budget:
            self._file = tempfile.TemporaryFile(prefix="olsmooth-scores-")
            for kept in self._in_memory:
                self._file.write(memoryview(kept.numpy()).cast("B"))
            self._in_memory = []
        if self.on_disk:
            self._file.seek(0, 2)
            self._file.write(memoryview(scores.numpy()).cast("B"))
        else:
            self._in_memory.append(scores.clone())  # not a view that would keep the caller's whole batch
        self._sizes.append(len(scores))
        self._labels.append(torch.stack([labels.detach().cpu().long(), positions.detach().cpu().long()], 1))
        self.rows += len(scores)

    def labels(self) -> Tensor:
        """The labels of every stored row, in order."""
        return self._labels.tensor()[:, 0].clone()

    def positions(self) -> Tensor:
        """The dataset positions of every stored row, in order."""
        return self._labels.tensor()[:, 1].clone()

    def batches(self, select: Tensor | None = None) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """(scores, labels, positions) of each stored batch in the order added; with `select` (a boolean mask
        over the stored rows), only the selected rows, and batches with none of them are not read."""
        if select is not None and select.shape != (self.rows,):
            raise ValueError(f"a mask of {tuple(select.shape)} for {self.rows} stored rows")
        if self.on_disk:
            self._file.flush()
        start = offset = 0
        kept = self._labels.tensor()
        for index, size in enumerate(self._sizes):
            mask = None if select is None else select[start:start + size]
            nbytes = 4 * self.num_classes * size
            if mask is None or mask.any():
                if self.on_disk:
                    scores = np.empty((size, self.num_classes), dtype=np.float32)
                    self._file.seek(offset)
                    if self._file.readinto(memoryview(scores).cast("B")) != nbytes:
                        raise OSError("the temporary file of stored scores was cut short")
                    scores = torch.from_numpy(scores)
                else:
                    scores = self._in_memory[index]
                labels, positions = kept[start:start + size, 0], kept[start:start + size, 1]
                if mask is not None and not mask.all():
                    scores, labels, positions = scores[mask], labels[mask], positions[mask]
                yield scores, labels, positions
            start += size
            offset += nbytes

    def subset(self, select: Tensor) -> RowStore:
        """A new store (same budget) of the selected rows (a boolean mask over the stored rows), in order."""
        kept = RowStore(self.num_classes, self.memory_budget)
        for scores, labels, positions in self.batches(select):
            kept.append(scores, labels, positions)
        return kept
