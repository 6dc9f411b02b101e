"""Batch samplers: class-wise pairs for class-wise self-knowledge distillation (CS-KD)."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler


class ClassPairBatchSampler(Sampler[list[int]]):
    """Batches laid out as [a_1 .. a_n, b_1 .. b_n]: anchors a_i, then for each a partner b_i of the same label.

    Each epoch the anchors are a permutation of the whole training set (every sample once), cut into batches of
    `batch_size` anchors, so a batch holds 2 * batch_size samples and an epoch has as many steps as plain
    shuffling would. Each partner is drawn uniformly among all samples of its anchor's label, the anchor itself
    included, as the authors' `PairBatchSampler` does (a class of one sample pairs it with itself).

    Every draw comes from `generator` (seeded with 0 when not given): reseeding it before an epoch replays that
    epoch. Under distributed training every rank builds the same global permutation and partners, so the
    generator must hold the same seed on every rank; as `DistributedSampler` does, the anchor-partner pairs are
    padded by repeating the first ones up to a multiple of `num_replicas` and rank r takes pairs r, r + W, ...
    (W = num_replicas), so every rank has the same number of batches.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray | Tensor, batch_size: int, num_replicas: int = 1,
                 rank: int = 0, generator: torch.Generator | None = None, drop_last: bool = False) -> None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        if labels.numel() == 0:
            raise ValueError("ClassPairBatchSampler needs at least one sample")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive number of anchors, got {batch_size}")
        if int(num_replicas) < 1 or not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"rank must lie in [0, num_replicas), got rank {rank} of {num_replicas}")
        self.labels = labels
        self.batch_size, self.num_replicas, self.rank = int(batch_size), int(num_replicas), int(rank)
        self.drop_last = drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        # samples grouped by label: members of a label are by_label[start[y] : start[y] + count[y]]
        self._by_label = torch.argsort(labels, stable=True)
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        self._group = inverse
        self._count = counts
        self._start = torch.cumsum(counts, 0) - counts

    @property
    def num_pairs(self) -> int:
        """Anchor-partner pairs this rank gets per epoch (padding included)."""
        return math.ceil(self.labels.numel() / self.num_replicas)

    def __len__(self) -> int:
        full, rest = divmod(self.num_pairs, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def pairs(self) -> tuple[Tensor, Tensor]:
        """This rank's anchors and partners for one epoch (int64, equal lengths), drawn from the generator."""
        total = self.labels.numel()
        anchors = torch.randperm(total, generator=self.generator)
        uniform = torch.rand(total, generator=self.generator, dtype=torch.float64)
        group = self._group[anchors]
        count = self._count[group]
        offset = torch.minimum((uniform * count).long(), count - 1)
        partners = self._by_label[self._start[group] + offset]
        padded = self.num_pairs * self.num_replicas
        if padded > total:
            repeat = torch.arange(padded) % total
            anchors, partners = anchors[repeat], partners[repeat]
        return anchors[self.rank::self.num_replicas], partners[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        anchors, partners = self.pairs()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield anchors[start:start + self.batch_size].tolist() + partners[start:start + self.batch_size].tolist()
