"""Checkpoints: written atomically, read without unpickling code, carrying everything needed to resume."""

from __future__ import annotations

import io
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserInputError
from ..fileio import atomic_write_bytes, atomic_write_file, io_error

__all__ = ["FORMAT", "atomic_write_file", "load_checkpoint", "require", "run_checkpoint", "rng_state",
           "save_checkpoint", "set_rng_state"]

FORMAT = "olsmooth-checkpoint-1"
_ZIP_MAGIC = b"PK\x03\x04"
# what every checkpoint holds (the weights and how to rebuild the model and its data); last.pt holds more
EVAL_KEYS = ("model", "config", "num_classes", "channels", "epoch")
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "loss", "rng", "best_top1", "best_epoch", "history")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dictionary atomically and durably (a crash or full disk leaves the previous file)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def _first_line(err: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(err).__name__


def run_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's best.pt (its last.pt when it has none), for eval and attack."""
    path = Path(path)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    return path


def load_checkpoint(path: str | Path, keys: tuple[str, ...] = EVAL_KEYS) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True and check it holds `keys`.

    A missing, empty, truncated or foreign file, a file carrying pickled code, or one without the needed
    entries is a one-line user error.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise UserInputError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_ZIP_MAGIC))
    except OSError as err:
        raise io_error(path, err, "read") from None
    if not head:
        raise UserInputError(f"{path} is empty (0 bytes), not a checkpoint")
    if head != _ZIP_MAGIC:
        raise UserInputError(f"{path} is not a checkpoint (not a PyTorch zip archive)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserInputError(f"refusing to load {path}: it carries pickled Python objects, not only tensors "
                             f"and plain values") from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise UserInputError(f"cannot read checkpoint {path} (truncated or corrupt: {_first_line(err)})") from None
    except OSError as err:
        raise io_error(path, err, "read") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserInputError(f"{path} is not an olsmooth checkpoint (use --pretrained for plain weight files)")
    return require(data, keys, path)


def require(ckpt: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> dict[str, Any]:
    """`ckpt` after checking it holds `keys` (and a mapping as its config); else a user error naming them."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise UserInputError(f"{path} is an incomplete checkpoint: no {', '.join(missing)}")
    if "config" in keys and not isinstance(ckpt["config"], dict):
        raise UserInputError(f"{path} is an incomplete checkpoint: its config is not a mapping")
    return ckpt


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


def checkpoint_class_names(run_dir: str | Path) -> list[str] | None:
    """The class names a run folder's best.pt (else last.pt) carries, or None where it has no checkpoint."""
    for name in ("best.pt", "last.pt"):
        if (Path(run_dir) / name).is_file():
            names = load_checkpoint(Path(run_dir) / name, keys=()).get("class_names")
            return [str(n) for n in names] if isinstance(names, (list, tuple)) else None
    return None
