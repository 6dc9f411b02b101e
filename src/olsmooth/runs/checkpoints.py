"""Checkpoint files: written atomically, read without unpickling code, and which file a run folder means.

The one rule for a run folder given where a checkpoint is expected (`eval`, `attack` and its `--surrogate`,
`ensemble`, `soft-labels`' class names, `load_checkpoint(DIR)`): its best.pt, or its last.pt where it has no
best.pt (`checkpoint_path`). Continuing a run (`--resume DIR`) is not reading a checkpoint: it always continues
from last.pt (`RunFolder.check_resumable`).
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import UserInputError
from ..fileio import atomic_write_bytes, io_error
from .layout import BEST, LAST

FORMAT = "olsmooth-checkpoint-1"
_ZIP_MAGIC = b"PK\x03\x04"
EVAL_KEYS = ("model", "config", "num_classes", "channels", "epoch")
"""What every checkpoint of a run holds: the weights and how to rebuild the model and its data (last.pt holds
more, the trainer's resume state)."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save a checkpoint dictionary atomically and durably (a crash or full disk leaves the previous file)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def _first_line(err: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(err).__name__


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file as given, or the one a run folder means: its best.pt, else its last.pt."""
    path = Path(path)
    if path.is_dir():
        return path / BEST if (path / BEST).exists() else path / LAST
    return path


def load_checkpoint(path: str | Path, keys: tuple[str, ...] = EVAL_KEYS) -> dict[str, Any]:
    """Load a checkpoint (a run folder: `checkpoint_path`'s) with weights_only=True and check it holds `keys`.

    A missing, empty, truncated or foreign file, a file carrying pickled code, or one without the needed
    entries is a one-line user error.
    """
    path = checkpoint_path(path)
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


def checkpoint_class_names(run_dir: str | Path) -> list[str] | None:
    """The class names the checkpoint a run folder means (`checkpoint_path`) carries, or None where it has none."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        return None
    names = load_checkpoint(path, keys=()).get("class_names")
    return [str(n) for n in names] if isinstance(names, (list, tuple)) else None
