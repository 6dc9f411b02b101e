"""`--save-predictions`: probabilities written into an .npz while evaluation streams them, in dataset order, from one
process or from every process under torchrun, never N x K of them in memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..analysis.calibration import RowBuffer
from ..fileio import NpzWriter, atomic_file
from .distributed import DistInfo
from .evaluate import gather_by_position
from .row_store import RowStore

GATHER_ELEMENTS = 1 << 22
"""Under torchrun the main process gathers rows in dataset-position ranges of about this many scores (16 MiB)."""

Batch = tuple[Tensor, Tensor, Tensor]


class RowSink:
    """The rows of one array, handed over batch by batch (`append`: rows, labels, dataset positions, as
    `RowStore.append` takes them), each process's in increasing positions in [0, span). One process writes them
    as they come; under torchrun each process keeps its own in a RowStore (memory up to its budget, then a
    temporary file) until the sink's block ends, and they are then merged onto the main process a position range
    at a time. `labels`: those of the rows written, in order (complete once the block has ended)."""

    def __init__(self, write: Callable[[Any], None] | None, width: int, span: int, dist: DistInfo) -> None:
        self._write = write  # None off the main process
        self._width, self._span, self._dist = width, span, dist
        self._store = RowStore(width) if dist.enabled else None
        self._labels = RowBuffer(1, torch.long)
        self._next = 0  # every position from here on is still to come

    def __enter__(self) -> RowSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if self._store is None:
            return
        with self._store:
            if kind is None:
                self._merge()

    @property
    def labels(self) -> Tensor:
        return self._labels.tensor()[:, 0].clone()

    def append(self, rows: Tensor, labels: Tensor, positions: Tensor) -> None:
        """Add a batch: rows (n, width), labels (n,), positions (n,) increasing and above any given before."""
        positions = positions.detach().to("cpu", torch.long)
        if len(positions):
            if int(positions[0]) < self._next or bool((positions.diff() <= 0).any()) or positions[-1] >= self._span:
                raise ValueError(f"rows must come in increasing dataset positions below {self._span}")
            self._next = int(positions[-1]) + 1
        if self._store is not None:
            self._store.append(rows, labels, positions)
        else:
            self._emit(rows, labels)

    def _emit(self, rows: Tensor, labels: Tensor) -> None:
        if self._write is not None:
            self._write(rows.detach().to("cpu", torch.float32).numpy())
        self._labels.append(labels.detach().cpu().long())

    def _merge(self) -> None:
        """Every process's stored rows onto the main process, in order, a position range at a time."""
        step = max(1, GATHER_ELEMENTS // self._width)
        for rows, labels, positions in by_position_range(self._store.batches(), self._span, step, self._width):
            rows, _ = gather_by_position(rows, positions, self._dist)
            labels, _ = gather_by_position(labels, positions, self._dist)
            self._emit(rows, labels)


def by_position_range(batches: Iterable[Batch], span: int, step: int, width: int) -> Iterator[Batch]:
    """(rows, labels, positions) of batches of `width`-wide rows with increasing positions in [0, span), regrouped
    into one group per range [start, start + step) for start = 0, step, 2 step, ... (empty where none falls in
    it): the same number of groups on every process, whatever rows it holds. At most a group and a batch are held
    at a time."""
    batches = iter(batches)
    held: Batch = (torch.zeros(0, width), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    for start in range(0, span, step):
        end = start + step
        while not len(held[2]) or held[2][-1] < end:
            batch = next(batches, None)
            if batch is None:
                break
            held = tuple(torch.cat([mine, new]) for mine, new in zip(held, batch))
        cut = int(torch.searchsorted(held[2], end))
        yield tuple(part[:cut] for part in held)
        held = tuple(part[cut:] for part in held)


class PredictionsFile:
    """FILE.npz as np.savez writes it (np.load reads it), built while evaluation streams and written by the main
    process alone: arrays of rows in dataset order (`rows`), small arrays whole (`write_array`). The file appears
    when the `with` block ends, atomically; after an error it does not, and an existing FILE is left as it was."""

    def __init__(self, path: str | Path, dist: DistInfo) -> None:
        self.path = Path(path)
        self.dist = dist
        self._stack = ExitStack()
        self._npz: NpzWriter | None = None

    def __enter__(self) -> PredictionsFile:
        if self.dist.is_main:
            with ExitStack() as stack:  # a failure between the two leaves no temporary file behind
                self._npz = stack.enter_context(NpzWriter(stack.enter_context(atomic_file(self.path))))
                self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def write_array(self, name: str, values: np.ndarray) -> None:
        """Array NAME, whole (on the main process; elsewhere nothing)."""
        if self._npz is not None:
            with self._npz.array(name, values.shape, values.dtype) as write:
                write(values)

    @contextmanager
    def rows(self, name: str, total: int, width: int, span: int) -> Iterator[RowSink]:
        """Array NAME of (total, width) float32 rows, appended to the sink by every process during the block, each
        with its dataset position in [0, span); the file holds them in position order."""
        with ExitStack() as stack:
            write = None if self._npz is None else stack.enter_context(
                self._npz.array(name, (total, width), np.float32))
            yield stack.enter_context(RowSink(write, width, span, self.dist))
