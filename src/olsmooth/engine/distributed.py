"""torchrun-aware process helpers: set-up from the environment, rank checks and cross-process sums."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

DEFAULT_TIMEOUT_S = 600.0
"""How long, under torchrun, a process waits in a collective for a peer that stopped answering, unless
`--dist-timeout` says otherwise: 10 minutes, longer than any step, evaluation or checkpoint save that one process
does while the others wait, and far shorter than torch's 30 minutes for gloo. (A killed peer is noticed at once.)"""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None, timeout_s: float | None = None) -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1), else a single process.

    NCCL on CUDA, gloo on CPU; each process takes the GPU of its LOCAL_RANK. `timeout_s` bounds how long a
    collective waits for a hung peer (DEFAULT_TIMEOUT_S when None).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    wants_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        from ..errors import UserInputError
        raise UserInputError(f"device {device!r} asked for but CUDA is not available here")
    if wants_cuda:
        dev = torch.device(device if device and ":" in device and world == 1 else f"cuda:{local}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timeout)
        _OWNED_GROUP.append(dist.group.WORLD)
    return DistInfo(rank, world, local, dev)


_OWNED_GROUP: list = []
"""The process group setup() created, if any: teardown() destroys that one and leaves a caller's own group alone."""


def teardown() -> None:
    """Leave the process group setup() created, so that no gloo or NCCL work outlives it into interpreter shutdown
    (where it can abort a process whose results are already written)."""
    if _OWNED_GROUP and dist.is_initialized() and dist.group.WORLD is _OWNED_GROUP.pop():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes in place (a no-op in a single process) and return it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of a tensor over all processes, in place (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_state(module: nn.Module, buffers_only: bool = False) -> None:
    """Give every process rank 0's buffers (batch-norm statistics) and, unless `buffers_only`, its parameters.

    After a training epoch each rank's batch-norm running statistics differ; only rank 0's are saved, so this
    makes the model every rank evaluates the saved one. A no-op in a single process.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        tensors = list(module.buffers()) + ([] if buffers_only else list(module.parameters()))
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


_PEER_LOST = ("timed out", "connection closed by peer", "connection reset by peer", "broken pipe")
"""What gloo's RuntimeError says when a peer did not answer in time, or died (killed, crashed) mid-collective."""


def is_peer_failure(err: BaseException) -> bool:
    """True for the error a collective raises when a peer died or did not answer in time (gloo: a RuntimeError
    saying so; NCCL: a DistBackendError)."""
    backend_error = getattr(dist, "DistBackendError", ())
    text = str(err).lower()
    return isinstance(err, backend_error) or (isinstance(err, RuntimeError) and any(s in text for s in _PEER_LOST))


def broadcast_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """Give every process rank 0's values of `tensor` (in place; a no-op in a single process) and return it."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=0)
    return tensor
