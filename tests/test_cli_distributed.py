"""`attack` and `ensemble` on two gloo processes (as under torchrun) print and write one result, equal to one
process's; a peer that dies mid-command gives the survivor one line."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from gloo import on_processes
from olsmooth.cli import main
from olsmooth.runs import results as results_module

ATTACK = ["--attack", "pgd", "--eps", "0.1", "--steps", "3", "--n", "150", "--batch-size", "32", "--json"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--epochs", "1", "--train-subset", "300", "--threads", "1", "--out", str(out)]) == 0
    return out


def as_torchrun(rank: int, world: int) -> None:
    """The environment torchrun gives a process (the process group itself is the harness's)."""
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def command(argv: list[str], rank: int, world: int) -> dict:
    """Run `olsmooth ARGV` on one process of the group: its exit code, what it printed, the files it wrote."""
    as_torchrun(rank, world)
    writes = []
    real = results_module.atomic_write_text  # what results/ is written with (`runs.results.write_result`)
    results_module.atomic_write_text = lambda path, text: (writes.append(str(path)), real(path, text))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "writes": writes}


def one_process(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out


def test_attack_on_two_processes_sums_the_counts_and_writes_once(run, tmp_path, capsys):
    single = json.loads(one_process(capsys, ["attack", "--checkpoint", str(run / "last.pt"), *ATTACK]))
    assert single["n"] == 150
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    argv = ["attack", "--checkpoint", str(copy / "last.pt"), *ATTACK, "--save-to-run"]
    ranks = on_processes(functools.partial(command, argv), 2, tmp_path)
    assert [r["code"] for r in ranks] == [0, 0] and ranks[1]["out"] == "" and ranks[1]["writes"] == []
    record = json.loads(ranks[0]["out"])
    assert record.pop("checkpoint") == str(copy / "last.pt") and single.pop("checkpoint") == str(run / "last.pt")
    assert record == single  # every count, hence n, clean and robust top-1, as one process gives
    (written,) = ranks[0]["writes"]
    assert json.loads(Path(written).read_text()) == {**record, "checkpoint": str(copy / "last.pt")}


def test_ensemble_on_two_processes_prints_once_and_saves_every_sample(run, tmp_path, capsys):
    members = [str(run / "last.pt"), str(run / "best.pt")]
    single = json.loads(one_process(capsys, ["ensemble", *members, "--json", "--save-predictions",
                                             str(tmp_path / "one.npz")]))
    argv = ["ensemble", *members, "--json", "--save-predictions", str(tmp_path / "two.npz")]
    ranks = on_processes(functools.partial(command, argv), 2, tmp_path)
    assert [r["code"] for r in ranks] == [0, 0] and ranks[1]["out"] == ""
    assert json.loads(ranks[0]["out"]) == pytest.approx(single)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    np.testing.assert_array_equal(one["labels"], two["labels"])
    np.testing.assert_allclose(one["probs"], two["probs"], atol=1e-6)


def on_its_own_group(port: int, argv: list[str], rank: int, world: int) -> dict:
    """Run the command as torchrun starts it, with no process group yet: it sets one up from the environment;
    whether the group is gone once main() returns."""
    dist.destroy_process_group()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return {**command(argv, rank, world), "left": not dist.is_initialized()}


@pytest.mark.parametrize("argv", [["ensemble", "{run}/last.pt", "--json"],
                                  ["attack", "--checkpoint", "{run}/last.pt", *ATTACK]], ids=["ensemble", "attack"])
def test_a_command_leaves_the_process_group_it_set_up(run, tmp_path, argv):
    with socket.socket() as probe:  # a free port for the group's store
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [arg.format(run=run) for arg in argv]
    ranks = on_processes(functools.partial(on_its_own_group, port, argv), 2, tmp_path)
    assert [(r["code"], r["left"]) for r in ranks] == [(0, True), (0, True)], ranks[0]["err"]


def die_or_evaluate(folder: Path, argv: list[str], rank: int, world: int) -> dict | None:
    """Rank 1 dies at once (as a killed process would); rank 0 runs the command."""
    if rank == 1:
        torch.save(None, folder / "rank-1.pt")
        os._exit(0)
    return command(argv, rank, world)


def test_a_dead_peer_is_one_line_for_the_survivor(run, tmp_path):
    group = tmp_path / "group"
    group.mkdir()
    argv = ["ensemble", str(run / "last.pt"), str(run / "best.pt"), "--json"]
    survivor = on_processes(functools.partial(die_or_evaluate, group, argv), 2, group)[0]
    assert survivor["code"] == 1 and survivor["out"] == ""
    lines = survivor["err"].strip().splitlines()
    assert len(lines) == 1 and "another process of this torchrun job died" in lines[0], survivor["err"]
