"""What a resumable checkpoint carries beyond the weights: the trainer's resume state and the random states.

The checkpoint file itself (its format, atomic writing, safe loading, which file a run folder means) is the run
folder's business: `olsmooth.runs.checkpoints`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RESUME_KEYS = ("optimizer", "scheduler", "scaler", "loss", "rng", "best_top1", "best_epoch", "history")
"""What last.pt holds beyond the entries of every checkpoint (`runs.checkpoints.EVAL_KEYS`)."""


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) random states, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
