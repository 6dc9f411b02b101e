"""Evaluation of one model or a softmax-averaged ensemble: every sample counted exactly once, on any world size."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..analysis import MetricAccumulator
from ..errors import UserInputError
from .distributed import DistInfo, all_reduce_sum
from .progress import Progress


@dataclass
class Evaluation:
    """Metrics (top1, top5 and ece in %, nll in nats) summed over every process; `is_main`: whether this process
    should print and write."""

    metrics: dict[str, float]
    is_main: bool = True


def check_loader_options(batch_size: int | None, workers: int) -> None:
    """One-line errors for a batch size below 1 or a negative worker count given to eval, ensemble or attack."""
    if batch_size is not None and batch_size < 1:
        raise UserInputError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise UserInputError(f"--workers must be at least 0, got {workers}")


def eval_loader(dataset: Dataset, batch_size: int, workers: int, dist: DistInfo) -> DataLoader:
    """A sequential loader over this process's share: samples rank, rank + W, ... (no padding duplicates)."""
    if dist.enabled:
        dataset = Subset(dataset, range(dist.rank, len(dataset), dist.world_size))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=dist.device.type == "cuda")


def batch_shards(dataset: Dataset, batch_size: int, workers: int, dist: DistInfo) -> DataLoader:
    """The batches one process would make (samples 0..B-1, B..2B-1, ...), every W-th of them from this process's
    rank: its k-th batch is batch rank + k * W, so per-batch work (a seeded attack) equals one process's."""
    starts = range(dist.rank * batch_size, len(dataset), dist.world_size * batch_size)
    batches = [list(range(start, min(start + batch_size, len(dataset)))) for start in starts]
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=dist.device.type == "cuda")


def share_positions(dist: DistInfo, seen: int, count: int) -> Tensor:
    """The dataset positions of the next `count` samples of this process's `eval_loader` share, after `seen`."""
    return dist.rank + dist.world_size * torch.arange(seen, seen + count)


def gather_by_position(local: Tensor, positions: Tensor, dist: DistInfo) -> tuple[Tensor, Tensor]:
    """The rows of every process, each process holding any number of them, ordered by their dataset positions
    (`positions`, one per row, unique over processes): (rows, positions), on the CPU."""
    positions = positions.to("cpu", torch.long)
    if dist.enabled:
        count = torch.tensor([len(local)], device=dist.device)
        counts = [torch.empty_like(count) for _ in range(dist.world_size)]
        torch.distributed.all_gather(counts, count)
        counts = [int(c) for c in counts]
        rows = max(counts)
        if rows == 0:  # every process agrees: nothing to gather
            return local.cpu(), positions
        parts = []
        for tensor in (local, positions):
            padded = tensor.new_zeros((rows, *tensor.shape[1:])).to(dist.device)
            padded[: len(tensor)] = tensor.to(dist.device)
            gathered = [torch.empty_like(padded) for _ in range(dist.world_size)]
            torch.distributed.all_gather(gathered, padded)
            parts.append(torch.cat([g[:c] for g, c in zip(gathered, counts)]).cpu())
        local, positions = parts
    order = torch.sort(positions, stable=True).indices
    return local.cpu()[order], positions[order]


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for `amp` in (bf16, fp16), or a no-op for none."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(models: Sequence[nn.Module], loader: DataLoader, dist: DistInfo, amp: str = "none",
             channels_last: bool = False, sink: Callable[[Tensor, Tensor, Tensor], None] | None = None,
             progress: str | None = None) -> Evaluation:
    """Average the float32 softmax of the models over the loader and reduce the metric sums over processes.

    `sink`, when given, receives each batch as it is computed: the averaged probabilities (n, K), the labels and
    the dataset positions (`loader` is this process's `eval_loader` share), as `RowStore.append` takes them, so a
    caller keeps or writes what it needs without the N x K of them in memory here. `progress` names the job for a
    progress bar (or, without a terminal, a line a minute) on the main process.
    """
    for model in models:
        model.eval()
    acc = MetricAccumulator(from_logits=False)
    seen = 0
    bar = Progress(len(loader), progress or "", enabled=bool(progress) and dist.is_main)
    for images, labels in loader:
        images = images.to(dist.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(dist.device, non_blocking=True)
        with autocast_context(dist.device, amp):
            probs = sum(torch.softmax(model(images).float(), dim=1) for model in models) / len(models)
        acc.update(probs, labels)
        if sink is not None:
            sink(probs, labels, share_positions(dist, seen, len(labels)))
        seen += len(labels)
        if bar.due():
            bar.show({})
        bar.update()
    bar.close()
    metrics = MetricAccumulator.from_sum_tensor(all_reduce_sum(acc.sum_tensor().to(dist.device)).cpu(),
                                                from_logits=False).compute()
    return Evaluation(metrics, is_main=dist.is_main)


@torch.no_grad()
def predict_probs(model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "none") -> Tensor:
    """The float32 softmax of `model` over every sample of `loader`, in order, on this process alone."""
    model.eval()
    chunks = []
    for images, *_ in loader:
        with autocast_context(device, amp):
            chunks.append(torch.softmax(model(images.to(device)).float(), dim=1).cpu())
    return torch.cat(chunks)
