"""Run a function on several gloo processes, as torchrun would, and collect what each returned."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, folder: str, fn: Callable[[int, int], Any]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world), f"{folder}/rank-{rank}.pt")
    finally:
        if dist.is_initialized():  # fn may have left the group, as a command that set up its own one does
            dist.destroy_process_group()
    # The result is saved: leave without interpreter finalisation, where gloo objects still referenced by a
    # test's modules can be destroyed out of order and abort a process that did its work.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def on_processes(fn: Callable[[int, int], Any], world: int, folder: Path) -> list[Any]:
    """fn(rank, world) on `world` processes joined in one process group (a module-level function, so the
    spawned processes can import it); its results (tensors, lists and dicts of them), one per rank."""
    mp.spawn(_worker, args=(world, str(folder), fn), nprocs=world, join=True)
    return [torch.load(folder / f"rank-{rank}.pt", weights_only=True) for rank in range(world)]
