"""Subsets of a training set: a seeded, stratified one (class proportions kept, every class present when it can be),
or the first N samples in the dataset's order."""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from ..data_choices import SUBSET_DRAWS
from ..errors import UserInputError


def _largest_remainder(total: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer shares of `total` proportional to integer `weights`: floors first, then one more to each of the
    largest remainders (ties in random order), computed exactly in integers."""
    weight_sum = int(weights.sum())
    if weight_sum == 0:
        return np.zeros_like(weights)
    floors, remainders = np.divmod(total * weights, weight_sum)
    left = total - int(floors.sum())
    order = np.lexsort((rng.permutation(len(weights)), -remainders))
    floors[order[:left]] += 1
    return floors


def _class_counts(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """How many samples of each class a subset of `size` takes, given the classes' sizes `counts`.

    Largest remainder on the quotas size * n_c / N; when size >= K (the number of non-empty classes), a class
    whose quota is below one gets exactly one sample and the rest are re-shared among the others, repeated
    until no quota is below one. No class gets more samples than it has.
    """
    present = counts > 0
    if size < int(present.sum()):
        return _largest_remainder(size, counts, rng)
    pinned = np.zeros_like(present)
    while True:
        free = present & ~pinned
        seats = size - int(pinned.sum())
        below = free & (seats * counts < int(counts[free].sum()))
        if not below.any():
            return pinned + _largest_remainder(seats, np.where(free, counts, 0), rng)
        pinned |= below


def _check_size_and_seed(size: int, seed: int) -> None:
    for what, value, least in (("subset size", size, 1), ("subset seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            kind = "positive" if least else "non-negative"
            raise UserInputError(f"{what} must be a {kind} integer, got {value!r}")


def stratified_subset(labels: Sequence[int] | np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of a seeded, stratified subset of `size` samples (all of them when size >= N).

    Per-class counts follow the class frequencies by largest remainder, every class present when size >= K
    (see `_class_counts`; docs/datasets.md); within each class the samples are drawn uniformly without
    replacement, from a generator of its own seeded by `seed`, so the global RNG is neither read nor advanced.
    """
    _check_size_and_seed(size, seed)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or (labels.size and labels.min() < 0):
        raise UserInputError("subset labels must be a 1-D sequence of non-negative class indices")
    if size >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(int(seed))
    counts = np.bincount(labels)
    per_class = _class_counts(counts, int(size), rng)
    members = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
    chosen = [rng.choice(group, size=int(n), replace=False) for group, n in zip(members, per_class)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def training_subset(labels: Sequence[int] | np.ndarray, size: int, seed: int, draw: str = "stratified") -> np.ndarray:
    """Sorted int64 positions in `labels` of the `size` samples that `--train-subset` keeps (all of them when size
    >= N), drawn as `draw` (one of SUBSET_DRAWS) says: "stratified" is `stratified_subset(labels, size, seed)`;
    "first" is positions 0..size-1, the dataset's first `size` samples in its own order, whatever their labels and
    the seed (what olsmooth took before the seeded draw, `range(min(size, N))`)."""
    if draw not in SUBSET_DRAWS:
        raise UserInputError(f"unknown subset draw {draw!r}; use one of {', '.join(SUBSET_DRAWS)}")
    if draw == "stratified":
        return stratified_subset(labels, size, seed)
    _check_size_and_seed(size, seed)
    return np.arange(min(int(size), len(labels)), dtype=np.int64)
