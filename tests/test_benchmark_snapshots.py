"""`python -m benchmarks.snapshots --quick` end to end on digits, checked against ensembles evaluated directly;
snapshot picks after an epoch, worked by hand; `olsmooth ensemble --after`."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from olsmooth.cli import main as olsmooth
from olsmooth.engine.inference import evaluate_checkpoints, pick_snapshots

ROOT = Path(__file__).resolve().parents[1]
CELLS = ["method=ce", "method=ls,ls_eps=0.1", "method=ols"]  # snapshots-quick.yaml's grid, as folder names


def load_script():
    """The module `python -m benchmarks.snapshots` runs (the repository root on sys.path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.snapshots")


def fake_run(folder: Path, epochs: range) -> Path:
    """A run folder holding empty epoch-NNN.pt files: enough for choosing snapshots by name."""
    folder.mkdir()
    for epoch in epochs:
        (folder / f"epoch-{epoch:03d}.pt").touch()
    return folder


def test_picks_after_an_epoch_by_hand(tmp_path):
    run = fake_run(tmp_path / "run", range(2, 21, 2))
    # goals 10 + 10 i / 3 = 13.3, 16.7, 20: the nearest snapshots are 14, 16 and 20
    assert [p.name for p in pick_snapshots(run, 3, after=10)] == ["epoch-014.pt", "epoch-016.pt", "epoch-020.pt"]
    # over all of training the goals are 6.7, 13.3, 20
    assert [p.name for p in pick_snapshots(run, 3)] == ["epoch-006.pt", "epoch-014.pt", "epoch-020.pt"]
    assert [p.name for p in pick_snapshots(run, 1, after=18)] == ["epoch-020.pt"]
    with pytest.raises(ValueError, match="5 epoch snapshots after epoch 10, fewer than --count 6"):
        pick_snapshots(run, 6, after=10)


def test_ensemble_after_needs_a_run(tmp_path, capsys):
    assert olsmooth(["ensemble", str(tmp_path / "a.pt"), "--after", "3"]) == 2
    assert "--after needs --from-run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("snapshots")
    assert load_script().main(["--quick", "--threads", "1", "--device", "cpu", "--out", str(out)]) == 0
    return out, json.loads((out / "snapshots.json").read_text())


def test_ensembles_match_direct_evaluation(quick):
    out, payload = quick
    assert payload["after"] == 3 and payload["sizes"] == [3, 5, 10]  # the first milestone of snapshots-quick
    rows = {(r["cell"], r["spread"], r["snapshots"], r["seed"]): r for r in payload["ensembles"]}
    # 6 snapshots: late ensembles of 1 and 3 (epochs 4-6), over all of training 1, 3 and 5; 2 seeds per cell
    assert sorted({(k[1], k[2]) for k in rows}) == [("all", 1), ("all", 3), ("all", 5), ("late", 1), ("late", 3)]
    assert len(rows) == len(CELLS) * 5 * 2
    for cell in CELLS:
        for seed in (0, 1):
            run = out / "snapshots-quick" / cell / f"seed-{seed}"
            late = evaluate_checkpoints([run / f"epoch-00{e}.pt" for e in (4, 5, 6)]).metrics
            assert rows[cell, "late", 3, seed]["top1"] == pytest.approx(late["top1"])
            assert rows[cell, "late", 3, seed]["nll"] == pytest.approx(late["nll"], rel=1e-5)
            logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            assert rows[cell, "late", 1, seed]["top1"] == pytest.approx(logged["top1"], abs=1e-4)
            single = {k: rows[cell, "late", 1, seed][k] for k in ("top1", "nll", "ece")}
            assert {k: rows[cell, "all", 1, seed][k] for k in single} == single


def test_report_has_both_spreads_and_tests(quick):
    out, _ = quick
    text = (out / "snapshots.md").read_text()
    assert "## Near-converged snapshots: after epoch 3" in text and "the paper's protocol" in text
    assert text.count("method=ols − method=ce") == 6  # top1, nll, ece in each of the two spreads
    assert (out / "snapshots.png").stat().st_size > 0
