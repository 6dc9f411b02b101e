"""Reliability through the command: one writer per run folder, --force that loses nothing, a crash at any write,
strict resume, checkpoints that are not what they claim, and the evaluated model being the saved one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from olsmooth import fileio
from olsmooth.cli import main
from olsmooth.runs import writer
from olsmooth.runs.checkpoints import load_checkpoint

CLI = [sys.executable, "-m", "olsmooth.cli"]
QUICK = ["--epochs", "2", "--train-subset", "300"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (TensorBoard aside) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "tensorboard" not in p.parts}


def fails_with(capsys, argv: list[str], message: str) -> str:
    """The command exits 2 with exactly one line on stderr that contains `message`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "finished"
    assert main(["train", *QUICK, "--save-every", "1", "--out", str(out)]) == 0
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


# -- one writer at a time, and a stale lock does not block -----------------------------------------------------
def wait_for_rows(proc: subprocess.Popen, run: Path, count: int) -> None:
    """Block until the run has logged `count` epochs (a file event, not a clock); fail if it exits first."""
    log = run / "metrics.jsonl"
    while not (log.exists() and len(log.read_text().splitlines()) >= count):
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before logging {count} epochs"
        try:
            proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            pass


def test_second_writer_and_force_are_refused_while_a_run_writes_and_a_kill_leaves_it_resumable(tmp_path, capsys):
    args = ["train", "--epochs", "12", "--batch-size", "32"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_cli(*args, "--out", str(whole)).returncode == 0
    proc = subprocess.Popen([*CLI, *args, "--out", str(broken)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_for_rows(proc, broken, 2)
        os.kill(proc.pid, signal.SIGSTOP)  # hold it mid-run while the others try
        fails_with(capsys, [*args, "--out", str(broken)], "already exists")
        fails_with(capsys, [*args, "--out", str(broken), "--force"], "in use by another olsmooth process")
        fails_with(capsys, ["train", "--resume", str(broken)], "in use by another olsmooth process")
        assert (broken / "last.pt").exists() and not (tmp_path / ".broken.olsmooth-replacing").exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(rows(broken)) < 12, "the run finished before it could be killed"
    done = run_cli("train", "--resume", str(broken))
    assert done.returncode == 0, done.stderr
    assert untimed(rows(broken)) == untimed(rows(whole))
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(broken / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["loss"]["soft_labels"], b["loss"]["soft_labels"])


# -- a kill at the worst moment: right after last.pt of epoch 2 is written -------------------------------------
KILL_AFTER_LAST = textwrap.dedent("""
    import os, sys
    from olsmooth.runs import writer
    from olsmooth.cli import main
    real = writer.save_checkpoint
    def save(path, payload):
        real(path, payload)
        if path.name == "last.pt" and payload["epoch"] == 2:
            os._exit(9)
    writer.save_checkpoint = save
    sys.exit(main(sys.argv[1:]))
""")


def test_a_kill_right_after_last_pt_leaves_the_folder_an_uninterrupted_run_writes(tmp_path):
    args = ["train", *QUICK, "--epochs", "3", "--save-every", "1", "--threads", "1"]  # one thread in both processes
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main([*args, "--out", str(whole)]) == 0
    script = tmp_path / "kill.py"
    script.write_text(KILL_AFTER_LAST)
    killed = subprocess.run([sys.executable, str(script), *args, "--out", str(broken)], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == 9, killed.stderr
    (broken / ".epoch-003.pt.k1ll3d.tmp").write_bytes(b"half a file")  # what a kill mid-write leaves
    assert main(["train", "--resume", str(broken)]) == 0
    a, b = tree(whole), tree(broken)
    assert sorted(a) == sorted(b)
    assert untimed(rows(broken)) == untimed(rows(whole))
    for name in ("soft_labels/epoch-002.npy", "soft_labels/epoch-003.npy", "soft_labels/epoch-003.png"):
        assert a[name] == b[name], name
    first, second = ({k: v for k, v in yaml.safe_load(t["config.yaml"]).items() if k != "out"} for t in (a, b))
    assert first == second
    for name in ("epoch-002.pt", "epoch-003.pt", "best.pt"):
        wa, wb = load_checkpoint(whole / name), load_checkpoint(broken / name)
        assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"]), name
    assert (broken / "summary.json").exists()


# -- --force replaces only a run known to be good ---------------------------------------------------------------
def test_force_with_a_run_that_fails_in_its_first_epoch_keeps_the_old_run(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    before = tree(run)
    fails_with(capsys, ["train", *QUICK, "--out", str(run), "--force", "--lr", "1e30"], "epoch 1")
    assert tree(run) == before


def test_force_replaces_the_run_after_the_new_one_checkpoints(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(run), "--force"]) == 0
    assert len(rows(run)) == 1 and not (run / "epoch-002.pt").exists()
    assert [p.name for p in run.parent.iterdir()] == [run.name]  # nothing left beside it


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    fails_with(capsys, ["train", *QUICK, "--out", str(out), "--lr", "1e30"], "epoch 1")
    assert not out.exists()
    stub = tmp_path / "stub"  # what older versions left: config.yaml and tensorboard/ of a run that never ran
    (stub / "tensorboard").mkdir(parents=True)
    (stub / "config.yaml").write_text("method: ols\n")
    fails_with(capsys, ["train", "--resume", str(stub)], "holds no checkpoint")
    assert main(["train", *QUICK, "--epochs", "1", "--out", str(stub)]) == 0


# -- resume trusts last.pt and allows only a short list of changes ---------------------------------------------
def test_an_emptied_config_yaml_is_refused(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "config.yaml").write_text("")
    fails_with(capsys, ["train", "--resume", str(run)], "config.yaml disagrees with last.pt")


@pytest.mark.parametrize("extra, message", [
    (["--lr", "0.5", "--weight-decay", "0.1"], "lr 0.05 -> 0.5, weight_decay 0.0005 -> 0.1"),
    (["--epochs", "1"], "may only grow"),
    (["-c", "cifar100-resnet34-ols"], "-c cannot be given"),
    (["--out", "elsewhere"], "--out cannot be given"),
])
def test_resume_refuses_changes_outside_the_documented_list(finished, tmp_path, capsys, extra, message):
    run = copy_of(finished, tmp_path)
    before = tree(run)
    fails_with(capsys, ["train", "--resume", str(run), *extra], message)
    assert tree(run) == before


def test_resume_with_more_epochs_continues_and_rewrites_config_yaml(finished, tmp_path):
    run = copy_of(finished, tmp_path)
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert [r["epoch"] for r in rows(run)] == [1, 2, 3]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3
    assert load_checkpoint(run / "last.pt")["config"]["epochs"] == 3
    assert rows(run)[2]["lr"] > 0  # the longer cosine continues from where the step is on it, not from lr 0


def test_resume_with_new_threads_and_timeout_goes_on_with_them(finished, tmp_path):
    """Threads and the like are how the run goes, not what it measures: a resume takes them and records them."""
    run = copy_of(finished, tmp_path)
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--resume", str(run), "--epochs", "3", "--threads", "1", "--dist-timeout", "30"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [r["epoch"] for r in rows(run)] == [1, 2, 3]
    for config in (yaml.safe_load((run / "config.yaml").read_text()), load_checkpoint(run / "last.pt")["config"]):
        assert (config["threads"], config["dist_timeout"]) == (1, 30.0)


def test_resume_does_not_need_the_pretrained_file(finished, tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(load_checkpoint(finished / "last.pt")["model"], weights)
    run = tmp_path / "ft"
    assert main(["train", *QUICK, "--epochs", "1", "--pretrained", str(weights), "--out", str(run)]) == 0
    weights.unlink()
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert len(rows(run)) == 2


# -- checkpoints that are not what they claim -------------------------------------------------------------------
def test_bad_checkpoints_are_one_line_for_eval_ensemble_and_resume(finished, tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for argv in (["eval", "--checkpoint", str(empty)], ["ensemble", str(empty), str(empty)]):
        fails_with(capsys, argv, "is empty (0 bytes)")
    run = copy_of(finished, tmp_path)
    (run / "last.pt").write_bytes(b"")
    fails_with(capsys, ["train", "--resume", str(run)], "is empty (0 bytes)")
    fails_with(capsys, ["eval", "--checkpoint", str(finished / "metrics.jsonl")], "is not a checkpoint")
    ckpt = load_checkpoint(finished / "last.pt")
    del ckpt["config"]
    torch.save(ckpt, tmp_path / "noconfig.pt")
    fails_with(capsys, ["eval", "--checkpoint", str(tmp_path / "noconfig.pt")], "incomplete checkpoint: no config")


def test_full_disk_and_read_only_folder_are_one_line_and_keep_the_old_run(finished, tmp_path, capsys, monkeypatch):
    import errno

    from olsmooth import fileio
    run = copy_of(finished, tmp_path)
    before = tree(run)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fileio.os, "fsync", no_space)
    fails_with(capsys, ["train", *QUICK, "--out", str(run), "--force"], "the disk is full")
    assert tree(run) == before

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    fails_with(capsys, ["train", "--resume", str(run), "--epochs", "3"], "the file system is read-only")
    assert tree(run) == before


def break_at_last_pt_of(monkeypatch, epoch: int, fault: Callable[[pytest.MonkeyPatch], None]) -> None:
    """From the write of epoch `epoch`'s last.pt on, `fault` breaks the file system for this process."""
    real = writer.save_checkpoint

    def save(path: Path, payload: dict) -> None:
        if path.name == "last.pt" and payload["epoch"] == epoch:
            fault(monkeypatch)
        real(path, payload)
    monkeypatch.setattr(writer, "save_checkpoint", save)


def fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fsync fails with ENOSPC, as on a full disk (what the writes above simulate too)."""
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fileio.os, "fsync", no_space)


def make_read_only(folder: Path) -> Callable[[pytest.MonkeyPatch], None]:
    """A fault: `folder` becomes read-only (EROFS for every file created, replaced or deleted in it)."""
    def inside(path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and str(folder) in os.path.abspath(path)

    def guard(real: Callable) -> Callable:
        def call(*args, **kwargs):
            if any(inside(a) for a in args) or kwargs.get("dir") and inside(kwargs["dir"]) or "dir_fd" in kwargs:
                raise OSError(errno.EROFS, "Read-only file system", str(args[0] if args else folder))
            return real(*args, **kwargs)
        return call

    def fault(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(fileio.tempfile, "mkstemp", guard(tempfile.mkstemp))
        for name in ("unlink", "rmdir", "replace", "rename", "link", "mkdir"):
            monkeypatch.setattr(os, name, guard(getattr(os, name)))
    return fault


def test_a_longer_resume_that_fills_the_disk_leaves_the_run_it_extended(finished, tmp_path, capsys, monkeypatch):
    run, whole = copy_of(finished, tmp_path), tmp_path / "whole"
    shutil.copytree(finished, whole)
    before, events = tree(run), sorted((run / "tensorboard").iterdir())
    with monkeypatch.context() as patch:
        break_at_last_pt_of(patch, 3, fill_the_disk)  # epoch 3 wrote its snapshot and soft labels, not last.pt
        fails_with(capsys, ["train", "--resume", str(run), "--epochs", "4"],
                   f"cannot write {run / 'last.pt'}: the disk is full")
    assert tree(run) == before and sorted((run / "tensorboard").iterdir()) == events
    assert main(["train", "--resume", str(run)]) == 0  # the 2-epoch run, finished: nothing to train
    assert sorted(tree(run)) == sorted(before) and [r["epoch"] for r in rows(run)] == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
    assert main(["train", "--resume", str(run), "--epochs", "4"]) == 0
    assert main(["train", "--resume", str(whole), "--epochs", "4"]) == 0  # the same, never interrupted
    a, b = tree(whole), tree(run)
    assert sorted(a) == sorted(b) and untimed(rows(run)) == untimed(rows(whole))
    for name in ("soft_labels/epoch-003.npy", "soft_labels/epoch-004.npy", "soft_labels/epoch-004.png"):
        assert a[name] == b[name], name
    assert yaml.safe_load(b["config.yaml"])["epochs"] == 4
    for name in ("epoch-003.pt", "best.pt", "last.pt"):
        wa, wb = load_checkpoint(whole / name), load_checkpoint(run / name)
        assert wa["epoch"] == wb["epoch"] and all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])


def test_a_folder_made_read_only_mid_run_names_the_file_whose_write_failed(finished, tmp_path, capsys,
                                                                             monkeypatch):
    run = copy_of(finished, tmp_path)
    break_at_last_pt_of(monkeypatch, 3, make_read_only(run))
    fails_with(capsys, ["train", "--resume", str(run), "--epochs", "3"],
               f"cannot write {run / 'last.pt'}: the file system is read-only")


def test_non_finite_training_is_one_line(tmp_path, capsys):
    fails_with(capsys, ["train", *QUICK, "--method", "ce", "--out", str(tmp_path / "r"), "--lr", "1e30"],
               "epoch 1")


# -- the summary every run writes -------------------------------------------------------------------------------
def test_summary_json_holds_the_best_and_last_test_figures(finished):
    summary = json.loads((finished / "summary.json").read_text())
    records = rows(finished)
    best = max(records, key=lambda r: r["top1"])
    assert summary["test_top1_last"] == records[-1]["top1"] and summary["test_top1_best"] == best["top1"]
    assert summary["test_nll_best"] == best["nll"] and summary["epochs"] == len(records)


def test_validation_split_picks_best_on_val_and_reports_test_at_best_and_last(tmp_path, capsys):
    out = tmp_path / "val"
    assert main(["train", *QUICK, "--epochs", "3", "--val-fraction", "0.2", "--out", str(out)]) == 0
    records = rows(out)
    assert all("val_top1" in r and "top1" not in r for r in records)
    summary = json.loads((out / "summary.json").read_text())
    best = max(range(3), key=lambda i: records[i]["val_top1"])
    assert summary["best_epoch"] == best + 1 and summary["best_top1"] == records[best]["val_top1"]
    from olsmooth.engine.inference import evaluate_checkpoints
    for which, path in (("best", out / "best.pt"), ("last", out / "last.pt")):
        assert evaluate_checkpoints([path]).metrics["top1"] == pytest.approx(summary[f"test_top1_{which}"])
    import numpy as np
    val, train = np.load(out / "val_indices.npy"), np.load(out / "train_indices.npy")
    assert len(np.intersect1d(val, train)) == 0 and len(train) == 300
    capsys.readouterr()
    assert main(["report", str(out), "--json"]) == 0  # report reads the test figures from summary.json
    reported = json.loads(capsys.readouterr().out)["summary"][0]
    assert reported["top1"]["mean"] == pytest.approx(summary["test_top1_last"])


# -- under torchrun the evaluated model is the saved model ------------------------------------------------------
def test_torchrun_logs_the_metrics_of_the_saved_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "olsmooth.cli", "train", "--epochs", "2", "--dist-timeout", "120",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    logged = rows(out)
    assert len(logged) == 2
    # every rank evaluated with rank 0's batch-norm statistics, which are the ones last.pt and best.pt hold
    for path, row in ((out / "last.pt", logged[-1]), (out / "best.pt", max(logged, key=lambda r: r["top1"]))):
        single = json.loads(run_cli("eval", "--checkpoint", str(path), "--json", "--calibration-data", "none").stdout)
        assert single["top1"] == pytest.approx(row["top1"], abs=1e-9)
        assert single["nll"] == pytest.approx(row["nll"], rel=1e-6)
    S = load_checkpoint(out / "last.pt")["loss"]["soft_labels"]
    torch.testing.assert_close(S.sum(1), torch.ones(S.size(0)))
