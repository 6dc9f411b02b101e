"""The run folder and the file writers: lock, forced replacement, crash recovery, stubs, umask, fsync, I/O errors."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from olsmooth import fileio
from olsmooth.analysis.soft_labels import epoch_soft_labels
from olsmooth.errors import UserInputError
from olsmooth.runs import writer
from olsmooth.runs.layout import LOCK
from olsmooth.runs.writer import RunFolder


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


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def save_one_epoch(run: RunFolder) -> None:
    run.save_epoch(1, last={"epoch": 1}, light={"epoch": 1}, history=[{"epoch": 1, "top1": 50.0}], is_best=True,
                   snapshot=False)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("links", [True, False])
def test_an_epoch_whose_last_pt_cannot_be_written_is_rolled_back(tmp_path, monkeypatch, links):
    folder = tmp_path / "run"
    populate(folder)
    (folder / "best.pt").write_text("old best.pt")
    before = files(folder)
    real = writer.save_checkpoint

    def no_links(*args) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")
    if not links:  # a file system without hard links: the previous best.pt is kept as a copy
        monkeypatch.setattr(writer.os, "link", no_links)

    def save(path: Path, payload: dict) -> None:
        if path.name == "last.pt":
            raise fileio.io_error(path, OSError(errno.ENOSPC, "No space left on device"))
        real(path, payload)
    monkeypatch.setattr(writer, "save_checkpoint", save)
    run = RunFolder(folder)
    run.open(resume=True, saved=1)
    with pytest.raises(UserInputError, match="last.pt: the disk is full"):
        run.save_epoch(2, last={"epoch": 2}, light={"epoch": 2}, history=[{"epoch": 2, "top1": 60.0}],
                       is_best=True, snapshot=True,
                       soft_labels=epoch_soft_labels(np.eye(3, dtype=np.float32), ["a", "b", "c"], 2, keep=True))
    run.close(failed=True)
    assert files(folder) == before  # no epoch-002 files, no TensorBoard events, the previous best.pt


def test_an_interrupt_after_last_pt_is_written_keeps_the_epoch(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    populate(folder)
    real = writer.save_checkpoint

    def save_then_interrupt(path: Path, payload: dict) -> None:
        real(path, payload)
        if path.name == "last.pt":
            raise KeyboardInterrupt
    monkeypatch.setattr(writer, "save_checkpoint", save_then_interrupt)
    run = RunFolder(folder)
    run.open(resume=True)
    with pytest.raises(KeyboardInterrupt):
        run.save_epoch(2, last={"epoch": 2}, light={"epoch": 2}, history=[{"epoch": 2, "top1": 60.0}],
                       is_best=True, snapshot=True)
    run.close(failed=True)
    assert {"best.pt", "epoch-002.pt"} <= set(files(folder))  # the epoch of the new last.pt is saved


@pytest.mark.parametrize("killed_in", [2, 3])
def test_resume_forgets_what_a_kill_left_of_an_epoch_after_last_pt(tmp_path, killed_in):
    folder = tmp_path / "run"
    populate(folder)  # last.pt of epoch 2, say
    (folder / "soft_labels").mkdir()
    for epoch in (1, 2, 3):
        (folder / f"epoch-00{epoch}.pt").write_text(f"snapshot {epoch}")
        (folder / "soft_labels" / f"epoch-00{epoch}.npy").write_text(f"soft labels {epoch}")
    (folder / "best.pt").write_text(f"best.pt of epoch {killed_in}")
    (folder / f".best.pt.before-00{killed_in}.tmp").write_text("best.pt before")  # a kill before its deletion
    run = RunFolder(folder)
    run.open(resume=True, saved=2)
    run.close()
    assert sorted(files(folder)) == ["best.pt", "epoch-001.pt", "epoch-002.pt", "last.pt", "metrics.jsonl",
                                     "soft_labels/epoch-001.npy", "soft_labels/epoch-002.npy"]
    assert (folder / "best.pt").read_text() == ("best.pt before" if killed_in == 3 else "best.pt of epoch 2")


def test_force_writes_beside_the_old_run_and_a_failure_leaves_it_untouched(tmp_path):
    folder = tmp_path / "run"
    populate(folder)
    run = RunFolder(folder)
    run.open(resume=False, force=True)
    assert run.work == tmp_path / ".run.olsmooth-replacing" and run.work.is_dir()
    run.write_config({"method": "new"})
    (run.work / "epoch-001.pt").write_text("new, unfinished")
    assert names(folder) == [LOCK, "epoch-001.pt", "last.pt", "metrics.jsonl"]
    assert (folder / "epoch-001.pt").read_text() == "old epoch-001.pt"
    run.close(failed=True)
    assert names(folder) == ["epoch-001.pt", "last.pt", "metrics.jsonl"] and names(tmp_path) == ["run"]


@pytest.mark.parametrize("exchange", [True, False])
def test_force_switches_to_the_new_run_at_its_first_checkpoint(tmp_path, monkeypatch, exchange):
    folder = tmp_path / "run"
    populate(folder)
    if not exchange:  # a file system without renameat2's exchange: two renames
        monkeypatch.setattr(writer, "exchange_paths", lambda first, second: False)
    run = RunFolder(folder)
    run.open(resume=False, force=True)
    save_one_epoch(run)
    assert run.work == folder and names(tmp_path) == ["run"]
    assert set(names(folder)) == {LOCK, "best.pt", "last.pt", "metrics.jsonl", "tensorboard"}
    with pytest.raises(UserInputError, match="in use by another olsmooth process"):
        RunFolder(folder).open(resume=True)  # the lock moved with the new run
    run.write_summary({"epochs": 1})
    run.close()
    assert "summary.json" in names(folder) and LOCK not in names(folder)


@pytest.mark.parametrize("left", [".run.olsmooth-replacing", ".run.olsmooth-replaced"])
def test_what_a_killed_replacement_left_beside_the_folder_is_deleted_on_the_next_open(tmp_path, left):
    folder = tmp_path / "run"
    populate(folder)
    populate(tmp_path / left, "other")
    run = RunFolder(folder)
    assert run.check_resumable() == folder / "last.pt"
    run.open(resume=True)
    run.close()
    assert names(tmp_path) == ["run"] and (folder / "last.pt").read_text() == "old last.pt"


def test_a_kill_between_the_two_renames_of_a_switch_without_exchange_is_finished_on_the_next_open(tmp_path):
    populate(tmp_path / ".run.olsmooth-replaced", "old")
    populate(tmp_path / ".run.olsmooth-replacing", "new")
    run = RunFolder(tmp_path / "run")
    run.open(resume=True)
    run.close()
    assert names(tmp_path) == ["run"] and (tmp_path / "run" / "last.pt").read_text() == "new last.pt"


def test_force_is_refused_from_inside_the_folder(tmp_path, monkeypatch):
    populate(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(UserInputError, match="from inside it"):
        RunFolder(".").check_new(force=True)


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
