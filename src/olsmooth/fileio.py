"""Atomic, durable file writes that follow the user's umask, and I/O errors that name the file and the reason.

Every file olsmooth writes goes through `atomic_write_file`: a temporary file beside the target, flushed and fsynced,
renamed over the target, then the directory fsynced, so neither a kill nor a power loss leaves a half-written or
empty file. The temporary names match `TMP_GLOB`, so a resumed run can remove what a kill left behind.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import UserInputError

TMP_GLOB = ".*.tmp"
"""Temporary files of interrupted atomic writes: `.NAME.RANDOM.tmp` beside NAME."""

_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied"}


def _file_mode() -> int:
    """0666 less the process umask: what open() would give a new file (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def io_error(path: str | os.PathLike[str], err: OSError, action: str = "write") -> UserInputError:
    """A one-line user error for a failed read or write of `path`, naming the reason (disk full, read-only...)."""
    reason = _REASONS.get(err.errno or -1) or (err.strerror or str(err)).strip().lower()
    return UserInputError(f"cannot {action} {path}: {reason}")


def read_array(path: str | os.PathLike[str]) -> Any:
    """np.load of a .npy (an array) or .npz (a mapping) without unpickling; a missing, empty, truncated or foreign
    file is a one-line error naming it."""
    import numpy as np
    try:
        return np.load(path, allow_pickle=False)
    except OSError as err:
        raise io_error(path, err, "read") from None
    except (ValueError, EOFError) as err:
        reason = str(err).splitlines()[0].strip().rstrip(".").lower() if str(err).strip() else type(err).__name__
        raise UserInputError(f"cannot read {path}: {reason} (empty, truncated or not a numpy file)") from None


class NpzWriter:
    """An .npz as np.savez writes it (a zip of uncompressed NAME.npy members, read by np.load), built one array at a
    time with each array's rows appended in order, so no array need ever be in memory whole. Closing it (the end
    of its `with` block without an error) writes the zip's directory; the handle stays open."""

    def __init__(self, handle: BinaryIO) -> None:
        import zipfile
        self._zip = zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:  # after an error the file is discarded: nothing to finish
            self._zip.close()

    @contextmanager
    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> Iterator[Callable[[Any], None]]:
        """Member NAME.npy of this shape and dtype (C order); the block gets a function taking the next rows
        (array-likes, cast to the dtype), which must add up to the shape by the end of the block."""
        import numpy as np
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        written = 0
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)

            def write(rows: Any) -> None:
                nonlocal written
                block = np.ascontiguousarray(rows, dtype=dtype)
                member.write(memoryview(block).cast("B"))
                written += block.nbytes

            yield write
            if written != expected:
                raise ValueError(f"{name}: {written} bytes written for an array of shape {tuple(shape)} "
                                 f"({expected} bytes)")


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside `path`; when the block ends without error the file is fsynced
    and renamed over `path` in one step, after an error it is removed and `path` is left as it was.

    OSErrors of creating, syncing or renaming it become a one-line UserInputError naming `path`; the block's own
    errors pass through unchanged."""
    path = Path(path)
    tmp: str | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as err:
            raise io_error(path, err) from None
        with os.fdopen(fd, "wb") as handle:
            try:
                os.fchmod(fd, _file_mode())
            except OSError as err:
                raise io_error(path, err) from None
            yield handle
            try:
                handle.flush()
                os.fsync(fd)
            except OSError as err:
                raise io_error(path, err) from None
        try:
            os.replace(tmp, path)
            tmp = None
            fsync_dir(path.parent)
        except OSError as err:
            raise io_error(path, err) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_file(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(handle) on a temporary file beside `path`, fsync it and rename it over `path` in one step.

    OSErrors (disk full, read-only folder, permission) become a one-line UserInputError naming `path`.
    """
    with atomic_file(path) as handle:
        try:
            write(handle)
        except OSError as err:
            raise io_error(path, err) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably."""
    atomic_write_file(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files interrupted atomic writes left in `folder` and its subfolders; return them."""
    stale = [p for p in Path(folder).rglob(TMP_GLOB) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


_EXCHANGE_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE), so a reader of either name
    sees one whole folder or the other at every instant; False where the system or file system cannot."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if rename(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in _EXCHANGE_UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))
