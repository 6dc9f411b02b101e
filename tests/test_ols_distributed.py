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
