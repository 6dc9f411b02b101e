"""`train --force` over a finished run is all or nothing: a SIGKILL at any rename leaves the folder holding the old
run, file for file, or the new one, which `--resume` then finishes into what an uninterrupted replacement writes.

The sweep kills a forked copy of this process (torch already imported, so each point costs only its training)
just before its Nth rename, for every N, through a hook on os.replace and the folder exchange; strace's fault
injection checks that the hook sees every rename the command makes and kills the real command at the switch
(OLSMOOTH_STRACE_SWEEP=all kills it at every rename instead).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from olsmooth.cli import main
from olsmooth.runs import writer
from olsmooth.runs.checkpoints import load_checkpoint

OLD = ["train", "--epochs", "2", "--train-subset", "300", "--save-every", "1", "--threads", "1"]
NEW = [*OLD, "--seed", "1", "--force"]
STAGING = re.compile(r"\..*\.olsmooth-(replacing|replaced)")


def files(folder: Path, tensorboard: bool = True) -> dict[str, bytes]:
    """Every file of a run folder but its lock, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock" and (tensorboard or "tensorboard" not in p.parts)}


def counting(kill_at: int | None, exchange: bool, count: list[int]) -> None:
    """Count renames (os.replace, os.rename and the folder exchange) in count[0], the exchange's number in count[1];
    SIGKILL this process before rename number kill_at."""
    real_replace, real_rename = os.replace, os.rename
    real_exchange = getattr(writer, "exchange_paths", None)

    def step() -> None:
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def replace(*args, **kwargs):
        step()
        return real_replace(*args, **kwargs)

    def rename(*args, **kwargs):
        step()
        return real_rename(*args, **kwargs)

    def swap(first, second):
        if not exchange:
            return False  # a file system without the exchange: the switch is two renames
        step()
        count[1] = count[0]
        return real_exchange(first, second)
    os.replace, os.rename, writer.exchange_paths = replace, rename, swap


def killed_at(n: int, out: Path, exchange: bool = True) -> int:
    """Run the replacement in a forked child killed before its nth rename; its wait status as a signal or code."""
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            counting(n, exchange, [0, 0])
            code = main([*NEW, "--out", str(out)])
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """The old run, and the new run written over a copy of it without interruption, with its rename count."""
    root = tmp_path_factory.mktemp("replace")
    old = root / "old" / "run"
    assert main([*OLD, "--out", str(old)]) == 0
    new = root / "new" / "run"
    shutil.copytree(old, new)
    count, saved = [0, 0], (os.replace, os.rename, getattr(writer, "exchange_paths", None))
    try:
        counting(None, True, count)
        assert main([*NEW, "--out", str(new)]) == 0
    finally:
        os.replace, os.rename, writer.exchange_paths = saved
    return {"old": old, "new": new, "renames": count[0], "switch": count[1]}


def untimed(data: bytes) -> list[dict]:
    """metrics.jsonl's rows without the timings."""
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in data.splitlines()]


def without(data: bytes, *keys: str) -> dict:
    return {k: v for k, v in yaml.safe_load(data).items() if k not in keys}


def check_old_or_new(run: Path, runs: dict) -> str:
    """The folder holds the old run file for file, or only the new run's files; --resume then agrees. Which."""
    old, new = runs["old"], runs["new"]
    state = "old" if files(run) == files(old) else "new"
    if state == "new" and run.exists():  # a kill between the two renames of a switch without exchange: no folder
        assert yaml.safe_load((run / "config.yaml").read_bytes())["seed"] == 1
        for path in run.glob("*.pt"):  # no checkpoint of the old run is left beside the new one
            assert load_checkpoint(path)["config"]["seed"] == 1, path.name
    assert main(["train", "--resume", str(run)]) == 0
    assert not [p.name for p in run.parent.iterdir() if STAGING.fullmatch(p.name)], "a staging folder was left"
    same_run(old if state == "old" else new, run)
    return state


def same_run(reference: Path, run: Path) -> None:
    """`run` holds what `reference` holds: the same files (TensorBoard aside) with the same contents, where the
    folder's own path, timings and checkpoint bytes (saved by another process) may differ."""
    a, b = files(reference, tensorboard=False), files(run, tensorboard=False)
    assert sorted(a) == sorted(b)
    for name in a:
        if name == "config.yaml":
            assert without(a[name], "out", "force") == without(b[name], "out", "force")
        elif name == "summary.json":
            assert without(a[name], "run") == without(b[name], "run")
        elif name == "metrics.jsonl":
            assert untimed(a[name]) == untimed(b[name])
        elif name.endswith(".pt"):
            wa, wb = load_checkpoint(reference / name), load_checkpoint(run / name)
            assert wa["epoch"] == wb["epoch"], name
            assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"]), name
        else:
            assert a[name] == b[name], name


def test_a_kill_at_every_rename_leaves_the_old_run_or_the_new_one(runs, tmp_path):
    states = []
    for n in range(1, runs["renames"] + 1):
        run = tmp_path / f"kill-{n}" / "run"
        shutil.copytree(runs["old"], run)
        assert killed_at(n, run) == -signal.SIGKILL, n
        states.append(check_old_or_new(run, runs))
    assert states == ["old"] * runs["switch"] + ["new"] * (runs["renames"] - runs["switch"]), states


@pytest.mark.parametrize("second", [False, True])
def test_a_kill_inside_a_switch_without_exchange_is_undone_or_finished(runs, tmp_path, second):
    run = tmp_path / "run"
    shutil.copytree(runs["old"], run)
    assert killed_at(runs["switch"] + second, run, exchange=False) == -signal.SIGKILL
    assert run.exists() != second
    assert check_old_or_new(run, runs) == ("new" if second else "old")


def strace_points(runs: dict) -> list[tuple[str, int]]:
    """(syscall, n) to kill the command at: the switch, or with OLSMOOTH_STRACE_SWEEP=all every rename."""
    points = [("renameat2", 1)]
    if os.environ.get("OLSMOOTH_STRACE_SWEEP") == "all":
        points += [("rename", n) for n in range(1, runs["renames"])]  # renames: all calls but the exchange
    return points


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_strace_sees_the_renames_the_hook_counts_and_a_kill_at_them_loses_nothing(runs, tmp_path):
    cli = [sys.executable, "-m", "olsmooth.cli", *NEW]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    counted = tmp_path / "count" / "run"
    shutil.copytree(runs["old"], counted)
    log = tmp_path / "renames.log"
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=rename,renameat,renameat2", "-o", str(log),
                           *cli, "--out", str(counted)], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = [line for line in log.read_text().splitlines() if str(tmp_path) in line and "rename" in line]
    assert len(ours) == runs["renames"], "\n".join(ours)  # the sweep above killed at every one of them
    states = {}
    for syscall, n in strace_points(runs):
        run = tmp_path / f"{syscall}-{n}" / "run"
        shutil.copytree(runs["old"], run)
        killed = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={syscall}", "-e",
                                 f"inject={syscall}:signal=SIGKILL:when={n}", *cli, "--out", str(run)],
                                capture_output=True, text=True, timeout=900, env=env)
        assert killed.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), (syscall, n, killed.stderr[-2000:])
        states[syscall, n] = check_old_or_new(run, runs)
    for (syscall, n), state in states.items():
        before_switch = syscall == "renameat2" or n < runs["switch"]
        assert state == ("old" if before_switch else "new"), (syscall, n)
