"""The one writer of a run folder: `RunFolder` owns its lock, checkpoints, metrics.jsonl, summary.json, TensorBoard
and soft labels (every file but results/, which `runs.results` writes).

The training loop only says what happened (`save_epoch`, `write_summary`, `close`); this object decides what is
written, in an order that survives a kill at any moment: the files of an epoch first, then `last.pt`, then
`metrics.jsonl`, so a run resumed from `last.pt` redoes at most one epoch and rewrites the same files. An epoch
whose `last.pt` cannot be written (full disk, read-only folder) is rolled back, and a resumed run rewrites
`config.yaml` (its new --epochs) only once a `last.pt` of its own is on disk, so a failed resume leaves the folder
the run of its `last.pt`. An exclusive lock (`flock` on `.lock`, released by the kernel when the process dies, so a
killed run never blocks its resume) keeps a second writer out for the whole run.

A forced replacement never touches the old run until the new one stands on its own: the new run is written into a
hidden sibling folder (`.NAME.olsmooth-replacing`) and, once its first checkpoint is there, one atomic exchange
(renameat2 RENAME_EXCHANGE) swaps the two folders, so at every instant the folder's name holds one whole run, old
or new, for every reader. What is left beside it (the unfinished new run, or the old run being deleted) is
deleted by the next command that locks the folder. Where the file system cannot exchange, the switch is two
renames (the old run aside to `.NAME.olsmooth-replaced`, the new one in); a kill between them leaves the name
empty until the next `train` on it finishes the switch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import UserInputError
from ..fileio import (
    atomic_write_file,
    atomic_write_text,
    exchange_paths,
    fsync_dir,
    io_error,
    remove_stale_temporaries,
)
from .checkpoints import save_checkpoint
from .layout import (
    BEST,
    CONFIG,
    LAST,
    LOCK,
    MEMORISATION,
    METRICS,
    NOISE,
    PREVIOUS_BEST,
    PREVIOUS_BEST_GLOB,
    REPLACED,
    RUN_ENTRY,
    SNAPSHOT_GLOB,
    SOFT_LABELS,
    SOFT_LABELS_GLOB,
    STAGING,
    SUMMARY,
    TENSORBOARD,
    TRANSITION,
    epoch_of,
    indices_name,
    labels_name,
    snapshot_name,
    soft_labels_name,
)


@dataclass(frozen=True)
class SoftLabelFiles:
    """What an epoch saves of a loss's soft-label matrix in soft_labels/ (what to save is the caller's choice,
    `analysis.soft_labels.epoch_soft_labels`): the matrix, dense (`matrix`, epoch-NNN.npy) or as top-k rows
    (`rows`: index, value, residual in epoch-NNN.npz); `draw(path)` writes its heatmap epoch-NNN.png, and
    `image` (1, H, W) in [0, 1] goes to TensorBoard."""

    matrix: np.ndarray | None = None
    rows: Mapping[str, np.ndarray] | None = None
    draw: Callable[[Path], Any] | None = None
    image: np.ndarray | None = None


def _sibling(path: Path, suffix: str) -> Path:
    """The hidden folder beside `path` that a replacement of `path` uses (skipped by shell globs and readers)."""
    path = Path(os.path.abspath(path))
    return path.parent / f".{path.name}{suffix}"


def _lock_file(lock: Path, folder: Path) -> int:
    """An exclusive flock on `lock` (created if needed), holding this process's pid; one line if another holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise io_error(lock, err, "create") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserInputError(f"run folder {folder} is in use by another olsmooth process (pid {holder}); "
                                 f"wait for it to end or choose another --out") from None
        try:  # the previous holder may have removed the file between our open and flock: lock the new one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _identity(path: Path) -> tuple[int, int] | None:
    """Device and inode of `path` (None when missing): an atomic write over it gives it a new inode."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no data written, so it works on a full disk), or a copy where the file system has none."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _remove(path: Path) -> None:
    """Delete a file or a folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


class RunFolder:
    """The files of one run in `path`; `active=False` (non-zero ranks under torchrun) makes every write a no-op.

    `work` is where the run's files are written: `path`, or during a forced replacement the hidden staging folder
    until the switch."""

    def __init__(self, path: str | os.PathLike[str], active: bool = True) -> None:
        self.path = Path(path)
        self.work = self.path
        self.active = active
        self._locks: list[int] = []  # the folder's lock; during a replacement also the staging folder's
        self._created = False
        self._writer: Any = None
        self._tensorboard_before: set[Path] = set()  # what tensorboard/ held when this process's writer opened
        self._saved = False  # whether this process has written a last.pt
        self._pending_config: dict[str, Any] | None = None  # a resumed run's config.yaml, until its first last.pt

    @property
    def replacing(self) -> bool:
        """True between the start of a forced replacement and its switch."""
        return self.work != self.path

    # -- state of the folder ---------------------------------------------------------------------------------
    def entries(self) -> list[Path]:
        """What the folder holds besides its lock."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.name != LOCK)

    def is_stub(self) -> bool:
        """True when the folder holds only files a run writes, and no last.pt (a run that never saved one)."""
        return not (self.path / LAST).exists() and all(RUN_ENTRY.fullmatch(p.name) for p in self.entries())

    def check_new(self, force: bool) -> None:
        """Fail early, before anything is built, when a new run could not use this folder; with `force` and a run
        there, the new run will be written beside it (`work`) until it replaces it."""
        if self.path.exists() and not self.path.is_dir():
            raise UserInputError(f"run folder {self.path} exists and is not a folder")
        if not (self.entries() and not self.is_stub()):
            return
        if not force:
            raise UserInputError(f"run folder {self.path} already exists; use --force to replace it or --resume "
                                 f"to continue")
        here, folder = Path.cwd().resolve(), self.path.resolve()
        if here == folder or folder in here.parents:
            raise UserInputError(f"cannot replace run folder {self.path} from inside it; run the command from "
                                 f"another folder")
        self.work = _sibling(self.path, STAGING)

    def check_resumable(self) -> Path:
        """The path of last.pt, or a one-line error saying why this folder cannot be resumed."""
        self._finish_switch()
        if not self.path.is_dir():
            raise UserInputError(f"cannot resume: run folder {self.path} not found")
        if not (self.path / LAST).is_file():
            raise UserInputError(f"cannot resume {self.path}: it holds no checkpoint (the run stopped before its "
                                 f"first epoch ended); start it again without --resume")
        return self.path / LAST

    # -- the lock and the life of a run ----------------------------------------------------------------------
    def open(self, resume: bool, force: bool = False, saved: int | None = None) -> None:
        """Lock the folder for this process, repair what an earlier kill left, and prepare it for the run. `saved`,
        the epoch of the last.pt a resumed run continues, also drops what a kill left of later epochs."""
        if not self.active:
            return
        self._finish_switch()
        try:
            self._created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise io_error(self.path, err, "create") from None
        self._locks.append(_lock_file(self.path / LOCK, self.path))
        try:
            if resume and saved is not None:  # before the temporaries go: the best.pt a later epoch replaced is one
                self._forget_after(saved)
            self._recover()
            if resume:
                self.check_resumable()
            else:
                self._prepare_new(force)
        except BaseException:
            self.close(failed=True)
            raise

    def _finish_switch(self) -> None:
        """A kill between the two renames of a switch without exchange left the name empty: put the new run in."""
        staging, replaced = _sibling(self.path, STAGING), _sibling(self.path, REPLACED)
        if not self.path.exists() and staging.is_dir() and replaced.is_dir():
            os.replace(staging, self.path)

    def _recover(self) -> None:
        """Delete what a replacement a kill cut short left beside the folder, and stale temporary files in it."""
        for suffix in (STAGING, REPLACED):
            _remove(_sibling(self.path, suffix))
        remove_stale_temporaries(self.path)

    def _prepare_new(self, force: bool) -> None:
        self.work = self.path
        if not self.entries():
            return
        if self.is_stub():
            self._clear()
            return
        self.check_new(force)  # sets `work` to the staging folder
        try:
            self.work.mkdir()
        except OSError as err:
            raise io_error(self.work, err, "create") from None
        self._locks.append(_lock_file(self.work / LOCK, self.path))

    def _clear(self) -> None:
        for entry in self.entries():
            _remove(entry)

    def _switch(self) -> None:
        """Make the new run the folder's in one atomic step, then delete the old run beside it."""
        if self._writer is not None:  # its files are in the staging folder; it reopens under the folder's name
            self._writer.close()
            self._writer = None
        try:
            if exchange_paths(self.work, self.path):
                old = self.work
            else:
                old = _sibling(self.path, REPLACED)
                os.replace(self.path, old)
                os.replace(self.work, self.path)
        except OSError as err:
            raise io_error(self.path, err, "replace") from None
        fsync_dir(Path(os.path.abspath(self.path)).parent)
        self.work = self.path
        old_lock = self._locks.pop(0)  # the folder's first lock file now lies in the old run
        shutil.rmtree(old, ignore_errors=True)
        os.close(old_lock)

    def close(self, failed: bool = False) -> None:
        """End the run: close TensorBoard, drop an unfinished replacement or new folder after a failure, unlock.

        After a failure this is best effort: the folder may have become unwritable, and the error that ended the
        run (naming the file whose write failed) is the one to report, not one about the lock file."""
        if not self.active or not self._locks:
            return
        try:
            if failed:
                with contextlib.suppress(OSError):
                    self._discard_failed()
            else:
                self._close_writer()
            with contextlib.suppress(OSError):  # a lock file left behind blocks nothing: the flock is the lock
                (self.path / LOCK).unlink(missing_ok=True)
        finally:
            self.work = self.path
            while self._locks:
                os.close(self._locks.pop())

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _discard_failed(self) -> None:
        """After a failure: delete an unfinished replacement (the old run was never touched), or a folder this run
        made and never checkpointed in (it holds nothing of value)."""
        self._close_writer()
        if self.replacing:
            shutil.rmtree(self.work, ignore_errors=True)
        elif self._created and not (self.path / LAST).exists():
            self._clear()
            (self.path / LOCK).unlink(missing_ok=True)
            self.path.rmdir()

    # -- what the loop reports -------------------------------------------------------------------------------
    def tensorboard(self, purge_step: int) -> Any:
        """The run's SummaryWriter, created on first use; steps from `purge_step` on are dropped from old files."""
        if self._writer is None and self.active:
            from torch.utils.tensorboard import SummaryWriter
            folder = self.work / TENSORBOARD
            self._tensorboard_before = set(folder.iterdir()) if folder.is_dir() else set()
            self._writer = SummaryWriter(str(folder), purge_step=purge_step)
        return self._writer

    def write_config(self, config: dict[str, Any], resumed: bool = False) -> None:
        """config.yaml: the resolved options. A resumed run's (which may have more --epochs) is written only once a
        last.pt of its own is on disk, after its first epoch (or at its end when it trains none): a resume that
        fails before leaves config.yaml describing the folder's last.pt, and a plain --resume the run it was."""
        if resumed:
            self._pending_config = config
        elif self.active:
            atomic_write_text(self.work / CONFIG, yaml.safe_dump(config, sort_keys=False))

    def _commit_config(self) -> None:
        """Write a resumed run's config.yaml, now that a last.pt of that run is on disk."""
        if self._pending_config is not None:
            self.write_config(self._pending_config)
            self._pending_config = None

    def write_indices(self, name: str, indices: np.ndarray) -> None:
        """`NAME_indices.npy`: which samples of the dataset's training split a run trains (or validates) on."""
        if self.active:
            atomic_write_file(self.work / indices_name(name), lambda handle: np.save(handle, indices))

    def write_noise(self, clean: np.ndarray, noisy: np.ndarray, description: dict[str, Any]) -> None:
        """clean_labels.npy, noisy_labels.npy and noise.json (kind, rate, rate_realised, seed, transition)."""
        if self.active:
            for name, labels in (("clean", clean), ("noisy", noisy)):
                atomic_write_file(self.work / labels_name(name), lambda handle, a=labels: np.save(handle, a))
            atomic_write_text(self.work / NOISE, json.dumps(description, indent=1) + "\n")

    def write_transition(self, matrix: np.ndarray, source: str) -> None:
        """transition.json: the K x K matrix a loss-corrected loss uses (rows = clean classes) and its source."""
        if self.active:
            text = json.dumps({"source": source, "transition": matrix.tolist()}, indent=1)
            atomic_write_text(self.work / TRANSITION, text + "\n")

    def write_metrics(self, history: Sequence[dict[str, Any]]) -> None:
        """metrics.jsonl: one JSON object per finished epoch."""
        if self.active:
            atomic_write_text(self.work / METRICS, "".join(json.dumps(row) + "\n" for row in history))

    def save_epoch(self, epoch: int, last: dict[str, Any], light: dict[str, Any], history: Sequence[dict[str, Any]],
                   is_best: bool, snapshot: bool, soft_labels: SoftLabelFiles | None = None) -> None:
        """Write everything epoch `epoch` produced: its files first, last.pt (the resume point), a resumed run's
        config.yaml, metrics.jsonl. When its files or last.pt cannot be written, the epoch is rolled back."""
        if not self.active:
            return
        before = _identity(self.work / LAST)
        try:
            if is_best:
                self._save_best(epoch, light)
            if snapshot:
                save_checkpoint(self.work / snapshot_name(epoch), light)
            writer = self.tensorboard(epoch)
            for key, value in history[-1].items():
                if key != "epoch" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, epoch)
            if soft_labels is not None:
                self._save_soft_labels(epoch, soft_labels)
            writer.flush()
            save_checkpoint(self.work / LAST, last)
        except BaseException:
            if _identity(self.work / LAST) == before:  # else last.pt was written (an interrupt came after it)
                self._roll_back(epoch)
            raise
        self._saved = True
        (self.work / PREVIOUS_BEST.format(epoch)).unlink(missing_ok=True)
        self._commit_config()
        self.write_metrics(history)
        if self.replacing:  # the new run now stands on its own: it becomes the folder's
            self._switch()

    def _save_best(self, epoch: int, light: dict[str, Any]) -> None:
        """Replace best.pt, keeping the previous one (a hard link, or a copy where links are not supported) until
        the epoch's last.pt is written, so a rolled-back epoch can put it back."""
        best, previous = self.work / BEST, self.work / PREVIOUS_BEST.format(epoch)
        if best.exists():
            try:
                previous.unlink(missing_ok=True)
                _link_or_copy(best, previous)
            except OSError as err:
                raise io_error(previous, err) from None
        save_checkpoint(best, light)

    def _roll_back(self, epoch: int) -> None:
        """Undo epoch `epoch`, whose last.pt was not written: its files go (`_forget_after`), and so do the
        TensorBoard files of a process that saved no epoch (the steps of one that did are hidden by the resume's
        purge_step). Best effort: in a folder that became unwritable, the error that stopped the epoch is the one
        to report."""
        if self._writer is not None and not self._saved:
            with contextlib.suppress(OSError):
                self._close_writer()
                for path in set((self.work / TENSORBOARD).iterdir()) - self._tensorboard_before:
                    path.unlink()
        self._forget_after(epoch - 1)

    def _forget_after(self, epoch: int) -> None:
        """Make the folder the run of its last.pt, saved at `epoch`: delete the snapshots and soft labels of later
        epochs and put back the best.pt a later epoch replaced. Called when an epoch fails, and on resume for what
        a kill left."""
        named = (*self.work.glob(PREVIOUS_BEST_GLOB), *self.work.glob(SNAPSHOT_GLOB), *self.work.glob(SOFT_LABELS_GLOB))
        for path in (p for p in named if epoch_of(p.name) > epoch):
            with contextlib.suppress(OSError):
                if path.match(PREVIOUS_BEST_GLOB):
                    os.replace(path, self.work / BEST)
                else:
                    path.unlink()

    def _save_soft_labels(self, epoch: int, files: SoftLabelFiles) -> None:
        """soft_labels/epoch-NNN.npy (or .npz), its heatmap epoch-NNN.png, and the TensorBoard image."""
        folder = self.work / SOFT_LABELS
        if files.matrix is not None:
            atomic_write_file(folder / soft_labels_name(epoch, ".npy"), lambda handle: np.save(handle, files.matrix))
        elif files.rows is not None:
            atomic_write_file(folder / soft_labels_name(epoch, ".npz"), lambda handle: np.savez(handle, **files.rows))
        if files.draw is not None:
            files.draw(folder / soft_labels_name(epoch, ".png"))
        if files.image is not None:
            self._writer.add_image(SOFT_LABELS, files.image, epoch)

    def write_memorisation(self, draw: Callable[[Path], Any]) -> None:
        """memorisation.png, drawn by `draw(path)`: per epoch, how the training samples with a corrupted label are
        predicted."""
        if self.active:
            draw(self.work / MEMORISATION)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json: the final and best figures, written when the run ends (its presence marks a finished run),
        after the config.yaml of a resumed run that trained no epoch."""
        if self.active:
            self._commit_config()
            atomic_write_text(self.work / SUMMARY, json.dumps(summary, indent=2) + "\n")
