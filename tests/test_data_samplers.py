"""ClassPairBatchSampler: every anchor once per epoch, a same-class partner for each, reproducible from the
generator's seed, and the ranks of a distributed run splitting one epoch as DistributedSampler does."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DistributedSampler

from olsmooth.data.samplers import ClassPairBatchSampler

LABELS = [0, 1, 1, 2, 2, 2, 3, 0, 1, 2, 2, 0, 4]  # class 4 has a single sample


def split(batch: list[int]) -> tuple[list[int], list[int]]:
    n = len(batch) // 2
    return batch[:n], batch[n:]


@pytest.mark.parametrize("batch_size", [1, 4, 5, 13, 20])
def test_every_sample_is_an_anchor_once_with_a_partner_of_its_class(batch_size):
    sampler = ClassPairBatchSampler(LABELS, batch_size, generator=torch.Generator().manual_seed(3))
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-len(LABELS) // batch_size)
    anchors = []
    for batch in batches:
        assert len(batch) % 2 == 0 and len(batch) // 2 <= batch_size
        a, b = split(batch)
        assert [LABELS[i] for i in a] == [LABELS[i] for i in b]
        anchors += a
    assert sorted(anchors) == list(range(len(LABELS)))


def test_a_class_of_one_sample_pairs_it_with_itself():
    for batch in ClassPairBatchSampler(LABELS, 4):
        for a, b in zip(*split(batch)):
            if a == 12:
                assert b == 12


def test_partners_are_uniform_over_the_class_including_the_anchor():
    labels = [0] * 4 + [1] * 2
    sampler = ClassPairBatchSampler(labels, 6, generator=torch.Generator().manual_seed(0))
    counts = Counter()
    for _ in range(2000):
        for a, b in zip(*split(next(iter(sampler)))):
            if a == 0:
                counts[b] += 1
    assert set(counts) == {0, 1, 2, 3}
    for member in range(4):
        assert abs(counts[member] / 2000 - 0.25) < 0.04  # ~4.5 standard deviations


def test_the_generator_seed_replays_an_epoch():
    g = torch.Generator()
    sampler = ClassPairBatchSampler(LABELS, 4, generator=g)
    g.manual_seed(11)
    first = list(sampler)
    second = list(sampler)
    g.manual_seed(11)
    assert list(sampler) == first and first != second


@pytest.mark.parametrize("world,drop_last", [(2, False), (3, False), (4, True)])
def test_ranks_split_the_epoch_like_distributed_sampler(world, drop_last):
    batch_size = 2
    per_rank = []
    for rank in range(world):
        g = torch.Generator().manual_seed(5)  # the same seed on every rank
        sampler = ClassPairBatchSampler(LABELS, batch_size, num_replicas=world, rank=rank, generator=g,
                                        drop_last=drop_last)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        per_rank.append([pair for batch in batches for pair in zip(*split(batch))])
        for a, b in per_rank[-1]:
            assert LABELS[a] == LABELS[b]
    share = len(DistributedSampler(range(len(LABELS)), world, 0, shuffle=False))  # ceil(N / world), padded
    full = share // batch_size * batch_size if drop_last else share
    assert {len(pairs) for pairs in per_rank} == {full}
    if not drop_last:
        anchors = Counter(a for pairs in per_rank for a, _ in pairs)
        assert set(anchors) == set(range(len(LABELS)))
        assert sum(anchors.values()) - len(LABELS) == share * world - len(LABELS)  # padding repeats a few


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        ClassPairBatchSampler(LABELS, 0)
    with pytest.raises(ValueError, match="rank"):
        ClassPairBatchSampler(LABELS, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="at least one"):
        ClassPairBatchSampler([], 2)
