"""The run folder and the file writers: lock, forced replacement, crash recovery, stubs, umask, fsync, I/O errors."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from olsmooth import fileio
from olsmooth.engine.run_folder import LOCK, PREVIOUS, RunFolder
from olsmooth.errors import UserInputError


def populate(folder: Path, text: str = "old") -> None:
    """A finished-looking run: last.pt, metrics and a snapshot."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "metrics.jsonl", "epoch-001.pt"):
        (folder / name).write_text(f"{text} {name}")


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    first, second = RunFolder(tmp_path / "run"), RunFolder(tmp_path / "run")
    first.open(resume=False)
    with pytest.raises(UserInputError, match=rf"in use by another olsmooth process \(pid {os.getpid()}\)"):
        second.open(resume=False, force=True)
    first.close()
    second.open(resume=False)  # free again once the first has ended
    second.close()


def test_a_lock_file_left_by_a_killed_process_does_not_block(tmp_path):
    folder = tmp_path / "run"
    populate(folder)
    (folder / LOCK).write_text("12345\n")  # what a SIGKILLed run leaves: the file, but no flock holder
    run = RunFolder(folder)
    run.open(resume=True)
    assert (folder / LOCK).read_text().strip() == str(os.getpid())
    run.close()
    assert not (folder / LOCK).exists()


def test_force_moves_the_old_run_aside_and_a_failure_puts_it_back(tmp_path):
    folder = tmp_path / "run"
    populate(folder)
    run = RunFolder(folder)
    run.open(resume=False, force=True)
    assert sorted(p.name for p in run.entries()) == [PREVIOUS]
    (folder / "epoch-001.pt").write_text("new, unfinished")
    run.close(failed=True)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-001.pt", "last.pt", "metrics.jsonl"]
    assert (folder / "epoch-001.pt").read_text() == "old epoch-001.pt"


def test_force_deletes_the_old_run_once_the_new_one_has_its_first_checkpoint(tmp_path):
    folder = tmp_path / "run"
    populate(folder)
    run = RunFolder(folder)
    run.open(resume=False, force=True)
    run.save_epoch(1, last={"epoch": 1}, light={"epoch": 1}, history=[{"epoch": 1, "top1": 50.0}], is_best=True,
                   snapshot=False, final=False, soft_labels=None, class_names=[])
    run.close()
    names = sorted(p.name for p in folder.iterdir())
    assert PREVIOUS not in names and "epoch-001.pt" not in names and {"last.pt", "best.pt"} <= set(names)


@pytest.mark.parametrize("finished", [False, True])
def test_a_replacement_cut_short_by_a_kill_is_finished_or_undone_on_the_next_open(tmp_path, finished):
    folder = tmp_path / "run"
    populate(folder / PREVIOUS)
    (folder / "epoch-001.pt").write_text("new")
    if finished:
        (folder / "last.pt").write_text("new last")
    run = RunFolder(folder)
    assert run.check_resumable() == folder / ("last.pt" if finished else f"{PREVIOUS}/last.pt")
    run.open(resume=True)
    run.close()
    assert not (folder / PREVIOUS).exists()
    assert (folder / "last.pt").read_text() == ("new last" if finished else "old last.pt")
    assert (folder / "epoch-001.pt").read_text() == ("new" if finished else "old epoch-001.pt")


def test_a_stub_is_reused_without_force_but_a_foreign_folder_is_not(tmp_path):
    stub = tmp_path / "stub"
    (stub / "tensorboard").mkdir(parents=True)
    (stub / "config.yaml").write_text("method: ols\n")
    RunFolder(stub).check_new(force=False)
    with pytest.raises(UserInputError, match="no checkpoint"):
        RunFolder(stub).check_resumable()
    run = RunFolder(stub)
    run.open(resume=False)
    assert run.entries() == []
    run.close(failed=True)  # the folder existed before: it stays, empty
    assert stub.is_dir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(UserInputError, match="already exists"):
        RunFolder(foreign).check_new(force=False)


def test_a_failed_run_removes_the_folder_it_created(tmp_path):
    run = RunFolder(tmp_path / "new" / "run")
    run.open(resume=False)
    (run.path / "config.yaml").write_text("x")
    run.close(failed=True)
    assert not run.path.exists() and (tmp_path / "new").is_dir()


def test_stale_temporaries_are_removed_on_open(tmp_path):
    folder = tmp_path / "run"
    populate(folder)
    (folder / "soft_labels").mkdir()
    stale = [folder / ".last.pt.x1y2.tmp", folder / "soft_labels" / ".epoch-002.npy.abc.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    run = RunFolder(folder)
    run.open(resume=True)
    run.close()
    assert not any(p.exists() for p in stale) and (folder / "last.pt").exists()


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        fileio.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_atomic_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                        real(fd)))
    fileio.atomic_write_file(tmp_path / "a.npy", lambda handle: np.save(handle, np.arange(3)))
    assert any(s.endswith(".tmp") for s in synced) and str(tmp_path) in synced
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3))


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "the disk is full"),
                                          (errno.EROFS, "the file system is read-only"),
                                          (errno.EACCES, "permission denied")])
def test_io_errors_name_the_file_and_the_reason_and_keep_the_old_file(tmp_path, monkeypatch, code, reason):
    target = tmp_path / "last.pt"
    target.write_text("previous")

    def fail(fd: int) -> None:
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(fileio.os, "fsync", fail)
    with pytest.raises(UserInputError) as info:
        fileio.atomic_write_bytes(target, b"new")
    assert str(info.value) == f"cannot write {target}: {reason}"
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
