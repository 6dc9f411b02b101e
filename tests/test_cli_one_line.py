"""Bad input to any command is one line on stderr and exit code 2: argparse's own errors (no usage block), loader
options of eval, ensemble and attack, an empty soft-label file, and seeds outside the range a run accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from olsmooth.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--epochs", "1", "--train-subset", "200", "--threads", "1", "--out", str(out)]) == 0
    return out


def one_line(capsys, argv: list[str]) -> str:
    """Run the command in-process: exit 2 and exactly one line on stderr, no traceback, no usage block."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("olsmooth: error: ") and "usage:" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv, named", [
    (["train", "--loss-opt", "momentum"], "train: argument --loss-opt: expected KEY=VALUE, got 'momentum'"),
    (["train", "--loss-opt", "=0.5"], "expected KEY=VALUE, got '=0.5'"),
    (["train", "--model-opt", "noequals"], "argument --model-opt: expected KEY=VALUE"),
    (["attack", "--checkpoint", "x.pt", "--eps", "0.1", "--attack", "bogus"], "attack: argument --attack: invalid "
                                                                                 "choice: 'bogus'"),
    (["eval", "--checkpoint", "x.pt", "--max-shift", "abc"], "eval: argument --max-shift: invalid int value"),
    (["study", "-c", "digits-quick", "--seeds", "abc"], "study: argument --seeds: invalid int value: 'abc'"),
    (["bogus"], "argument command: invalid choice: 'bogus'"),
    (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["eval"], "eval: the following arguments are required: --checkpoint"),
])
def test_argparse_errors_are_one_line_for_every_command(capsys, tmp_path, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path)
    assert named in one_line(capsys, argv)
    assert list(tmp_path.iterdir()) == []


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as done:
        main(["eval", "--help"])
    assert done.value.code == 0 and "usage: olsmooth eval" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "ensemble", "attack"])
@pytest.mark.parametrize("flag, value, named", [("--batch-size", "0", "--batch-size must be at least 1, got 0"),
                                                ("--batch-size", "-5", "--batch-size must be at least 1, got -5"),
                                                ("--workers", "-1", "--workers must be at least 0, got -1")])
def test_loader_options_of_eval_ensemble_and_attack(run, capsys, command, flag, value, named):
    target = {"eval": ["--checkpoint", str(run)], "ensemble": [str(run / "last.pt"), str(run / "last.pt")],
              "attack": ["--checkpoint", str(run), "--attack", "fgsm", "--eps", "0.1"]}[command]
    assert named in one_line(capsys, [command, *target, flag, value])


def test_an_empty_soft_label_file_is_one_line(run, capsys, tmp_path):
    import shutil
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "soft_labels" / "epoch-001.npy").write_bytes(b"")
    assert "cannot read" in one_line(capsys, ["soft-labels", str(copy)])


@pytest.mark.parametrize("seeds, named", [([0, -3], "seed must be in [0, 4294967295], got -3"),
                                          ([2**32], "got 4294967296")])
def test_study_seeds_outside_a_runs_range_are_refused_before_anything_trains(capsys, tmp_path, seeds, named):
    study = tmp_path / "study.yaml"
    study.write_text(f"base: {{epochs: 1}}\ngrid: {{method: [ce]}}\nseeds: {seeds}\n")
    assert named in one_line(capsys, ["study", "-c", str(study), "--out", str(tmp_path / "out")])
    assert named in one_line(capsys, ["study", "-c", "digits-quick", "--seeds", *map(str, seeds),
                                      "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
