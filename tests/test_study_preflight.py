"""A study checks every cell before its first run starts: a wrong model or dataset name, label noise the dataset
has no class map for, or a missing file (--pretrained, --noise-map, a transition matrix) in its last cell stops it
with one line naming the cell, before any run folder is made; a run that resumes from last.pt needs none of the
files."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from olsmooth.cli import main
from olsmooth.engine.config import build_config, input_files
from olsmooth.engine.resolve import resolve
from olsmooth.errors import UserInputError
from olsmooth.studies.plan import plan_runs
from olsmooth.studies.spec import load_study

BASE = {"dataset": "digits", "epochs": 1, "train_subset": 100, "model": "mlp"}
GOOD = ["ce", {"method": "ls", "ls_eps": 0.1}, "ols", "tfkd"]


def study_file(folder: Path, fifth: dict, base: dict | None = None) -> Path:
    """A study of five cells (four good ones first) whose fifth sets `fifth`."""
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({"base": {**BASE, **(base or {})}, "grid": {"method": [*GOOD, fifth]},
                                    "seeds": [0]}))
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


FIFTH_CELL_ERRORS = [
    ({"method": "ce", "pretrained": "no-such-weights.pt"}, "method=ce,pretrained=no-such-weights.pt/seed-0: no such "
     "file: pretrained no-such-weights.pt"),
    ({"method": "ce", "noise": "asymmetric:0.2", "noise_map": "no-such-map.json"}, "no such file: noise_map "
     "no-such-map.json"),
    ({"method": "forward", "noise": "symmetric:0.2", "loss_options": {"transition": "no-such-matrix.npy"}},
     "no such file: loss option transition no-such-matrix.npy"),
    ({"method": "ce", "model": "resnet1B"}, "model=resnet1B/seed-0: unknown model 'resnet1B'"),
    ({"method": "ce", "dataset": "synthetic-1k", "noise": "asymmetric:0.2"},
     "asymmetric noise has no built-in class map for synthetic-1k"),
    ({"method": "ce", "noise": "asymmetric-superclass:0.2"}, "asymmetric-superclass noise is defined for cifar100"),
]


@pytest.mark.parametrize("fifth, message", FIFTH_CELL_ERRORS)
def test_a_bad_fifth_cell_stops_the_study_before_its_first_run(tmp_path, monkeypatch, fifth, message):
    monkeypatch.chdir(tmp_path)  # the study's relative paths are read from where it runs
    path, out = study_file(tmp_path, fifth), tmp_path / "out"
    for argv in (["--dry-run"], []):
        code, stdout, stderr = run_cli(["study", "-c", str(path), "--out", str(out), *argv])
        assert code == 2 and stdout == "", stdout
        assert len(stderr.splitlines()) == 1 and stderr.startswith("olsmooth: error: "), stderr
        assert message in stderr, stderr
    assert not out.exists()  # no run trained, no folder made


def test_files_that_exist_pass_and_are_found_by_their_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("weights.pt").write_bytes(b"")
    Path("matrix.npy").write_bytes(b"")
    fifth = {"method": "forward", "noise": "symmetric:0.2", "pretrained": "weights.pt",
             "loss_options": {"transition": "matrix.npy"}}
    study = load_study(study_file(tmp_path, fifth))
    assert [run.status.state for run in plan_runs(study, tmp_path / "out")] == ["new"] * 5
    assert input_files(study.cells[-1].config) == {"pretrained": "weights.pt", "loss option transition": "matrix.npy"}
    known = build_config({}, {"method": "forward", "noise": "symmetric:0.2", "loss_options": {"transition": "known"}})
    assert input_files(known) == {}


def test_a_partial_run_resumes_without_the_files_a_new_run_reads(tmp_path, monkeypatch):
    """last.pt holds the weights and the matrix a run started from: a partial run is planned though the files
    are gone; a new seed of the same cell is refused."""
    monkeypatch.chdir(tmp_path)
    path, out = study_file(tmp_path, {"method": "ce", "pretrained": "gone.pt"}), tmp_path / "out"
    study = load_study(path)
    cell = study.cells[-1]
    folder = out / cell.name / "seed-0"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(resolve(study.config(cell, 0, folder)).to_dict()))
    (folder / "last.pt").write_bytes(b"")
    others = [c for c in study.cells if c is not cell]
    for other in others:  # the other cells' runs are finished
        done = out / other.name / "seed-0"
        done.mkdir(parents=True)
        (done / "config.yaml").write_text(yaml.safe_dump(resolve(study.config(other, 0, done)).to_dict()))
        (done / "metrics.jsonl").write_text('{"epoch": 1, "top1": 50.0}\n')
    assert [run.status.state for run in plan_runs(study, out)] == ["done"] * 4 + ["partial"]
    with pytest.raises(UserInputError, match=r"seed-1: no such file: pretrained gone\.pt"):
        plan_runs(load_study(path, seeds=[0, 1]), out)
