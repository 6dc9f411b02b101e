"""Reader for IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain, with validation."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...errors import UserInputError

# IDX type byte -> element type (multi-byte types are big-endian).
_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> BinaryIO:
    """Open for reading, decompressing when the content (not the name) is gzip."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read_header(f: BinaryIO, path: Path, ndim: int | None) -> tuple[np.dtype, tuple[int, ...]]:
    magic = f.read(4)
    if len(magic) != 4 or magic[:2] != b"\0\0" or magic[2] not in _DTYPES:
        raise UserInputError(f"{path} is not an IDX file: bad magic number {magic.hex() or '(empty)'}")
    if ndim is not None and magic[3] != ndim:
        raise UserInputError(f"{path}: expected an IDX file with {ndim} dimension(s), found {magic[3]}")
    dims = f.read(4 * magic[3])
    if len(dims) != 4 * magic[3]:
        raise UserInputError(f"{path}: IDX header ends early")
    return _DTYPES[magic[2]], struct.unpack(f">{magic[3]}I", dims)


def read_idx_shape(path: Path, ndim: int | None = None) -> tuple[int, ...]:
    """The array shape from the header alone (cheap; no data decoded)."""
    try:
        with _open(path) as f:
            return _read_header(f, path, ndim)[1]
    except (OSError, EOFError) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
    """The whole array, in native byte order; the data size must match the header exactly."""
    try:
        with _open(path) as f:
            dtype, shape = _read_header(f, path, ndim)
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UserInputError(f"cannot read {path}: {exc}") from None
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise UserInputError(f"{path}: IDX data holds {len(data)} bytes, the header {shape} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
