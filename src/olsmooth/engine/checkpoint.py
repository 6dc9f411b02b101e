"""Checkpoints: written atomically, read without unpickling code, carrying everything needed to resume."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch

from ..errors import UserInputError

FORMAT = "olsmooth-checkpoint-1"


def atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it over `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_file(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`atomic_write` for writers that take an open binary file (numpy's save/savez): it is closed before the
    rename, and no suffix is appended to the temporary name."""
    def to_path(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            write(handle)
    atomic_write(path, to_path)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dictionary atomically (a crash leaves the previous file intact)."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **payload}, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; missing, corrupt or code-carrying files are user errors."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise UserInputError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserInputError(f"refusing to load {path}: it carries pickled Python objects, not only tensors "
                             f"({str(err).splitlines()[0][:120]})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserInputError(f"cannot read checkpoint {path}: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserInputError(f"{path} is not an olsmooth checkpoint (use --pretrained for plain weight files)")
    return data


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
