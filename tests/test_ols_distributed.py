"""Two gloo processes must end each epoch with the matrix one process computes on all the data."""

from __future__ import annotations

import torch

from gloo import on_processes
from olsmooth import OnlineLabelSmoothing

K, EPOCHS, STEPS, B = 7, 3, 4, 12


def batches(epoch: int):
    """The global batches of one epoch (each rank takes its half of every batch)."""
    g = torch.Generator().manual_seed(epoch)
    for _ in range(STEPS):
        y = torch.randint(0, K, (B,), generator=g)
        z = torch.randn(B, K, generator=g)
        z[torch.arange(B), y] += 2.0
        yield z, y


def run(preset: str, rank: int, world: int) -> list[torch.Tensor]:
    ols = OnlineLabelSmoothing.from_preset(preset, num_classes=K)
    matrices = []
    for epoch in range(EPOCHS):
        for z, y in batches(epoch):
            ols(z[rank::world], y[rank::world])
        ols.next_epoch()
        matrices.append(ols.soft_labels.clone())
    return matrices


def both_presets(rank: int, world: int) -> dict[str, list[torch.Tensor]]:
    return {preset: run(preset, rank, world) for preset in ("paper-cifar", "paper-fine-grained")}


def test_two_processes_match_one_process_on_all_the_data(tmp_path):
    ranks = on_processes(both_presets, 2, tmp_path)
    for preset in ("paper-cifar", "paper-fine-grained"):
        single = run(preset, 0, 1)
        for got in ranks:
            for a, b in zip(got[preset], single):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


SPARSE_K, SPARSE_TOP, SPARSE_CANDIDATES = 40, 3, 40  # a store as wide as a row: its capacity is never exceeded


def sparse_batches(epoch: int):
    """The global batches of one epoch at more classes, with a fixed similarity structure so rows have tails."""
    g = torch.Generator().manual_seed(50 + epoch)
    for _ in range(STEPS):
        y = torch.randint(0, SPARSE_K, (2 * B,), generator=g)
        z = torch.randn(2 * B, SPARSE_K, generator=g) * 2
        z[torch.arange(2 * B), y] += 4.0
        yield z, y


def run_sparse(rank: int, world: int) -> list[list[torch.Tensor]]:
    ols = OnlineLabelSmoothing(SPARSE_K, top_k=SPARSE_TOP, candidates=SPARSE_CANDIDATES, momentum=0.2)
    rows = []
    for epoch in range(EPOCHS):
        for z, y in sparse_batches(epoch):
            ols(z[rank::world], y[rank::world])
        ols.next_epoch()
        rows.append([t.clone() for t in ols.sparse_soft_labels])
    return rows


def test_two_processes_match_one_process_with_top_k(tmp_path):
    ranks = on_processes(run_sparse, 2, tmp_path)
    single = run_sparse(0, 1)
    for got in ranks:
        for (index, value, residual), (index1, value1, residual1) in zip(got, single):
            assert torch.equal(index, index1)
            torch.testing.assert_close(value, value1, atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(residual, residual1, atol=1e-6, rtol=1e-6)
