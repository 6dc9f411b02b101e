"""`python -m benchmarks.snapshots --quick` end to end on digits, checked against ensembles evaluated directly;
its page regenerated from its CSV alone (--from-csv, --publish), an edited figure caught; the published page
regenerated from its committed CSV; snapshot picks after an epoch, worked by hand; `olsmooth ensemble --after`."""

from __future__ import annotations

import importlib
import json
import shutil
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
    rows = {(r["cell"], r["after"], r["snapshots"], r["seed"]): r for r in payload["ensembles"]}
    # 6 snapshots: late ensembles of 1 and 3 (epochs 4-6), over all of training 1, 3 and 5; 2 seeds per cell
    assert sorted({(k[1], k[2]) for k in rows}) == [(0, 1), (0, 3), (0, 5), (3, 1), (3, 3)]
    assert len(rows) == len(CELLS) * 5 * 2
    for cell in CELLS:
        for seed in (0, 1):
            run = out / "snapshots-quick" / cell / f"seed-{seed}"
            late = evaluate_checkpoints([run / f"epoch-00{e}.pt" for e in (4, 5, 6)]).metrics
            assert rows[cell, 3, 3, seed]["top1"] == pytest.approx(late["top1"])
            assert rows[cell, 3, 3, seed]["nll"] == pytest.approx(late["nll"], rel=1e-5)
            logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            assert rows[cell, 3, 1, seed]["top1"] == pytest.approx(logged["top1"], abs=1e-4)
            single = {k: rows[cell, 3, 1, seed][k] for k in ("top1", "nll", "ece")}
            assert {k: rows[cell, 0, 1, seed][k] for k in single} == single


def test_report_has_both_spreads_and_tests(quick):
    out, _ = quick
    text = (out / "snapshots.md").read_text()
    assert "## Near-converged snapshots: after epoch 3" in text and "the paper's protocol" in text
    assert text.count("method=ols − method=ce") == 6  # top1, nll, ece in each of the two spreads
    assert text.count("| snapshots=3 − snapshots=1 | method=ols |") == 3  # the late gain: top1, nll, ece
    assert text.count("| snapshots=5 − snapshots=1 | method=ols |") == 3  # over all of training
    assert "| Holm p |" in text and "resolvable" in text
    assert (out / "snapshots.png").stat().st_size > 0


def test_csv_holds_the_runs_and_regenerates_the_page(quick, capsys):
    out, payload = quick
    script = load_script()
    study = script.load_study(script.QUICK_STUDY)
    rows = script.read_csv(study, out / "snapshots.csv")
    assert rows == payload["ensembles"]  # floats read back exactly
    assert script.main(["--from-csv", str(out / "snapshots.csv"), "--study", script.QUICK_STUDY]) == 0
    assert capsys.readouterr().out == (out / "snapshots.md").read_text()


def test_gain_by_hand(quick):
    """The late gain of method=ce: mean over seeds of ensemble − single top-1, printed with 3 decimals."""
    out, payload = quick
    rows = {(r["cell"], r["after"], r["snapshots"], r["seed"]): r["top1"] for r in payload["ensembles"]}
    gain = sum(rows["method=ce", 3, 3, s] - rows["method=ce", 3, 1, s] for s in (0, 1)) / 2
    assert f"| snapshots=3 − snapshots=1 | method=ce | top1 | 2 | {gain:+.3f} |" in (out / "snapshots.md").read_text()


def test_published_page_is_checked(quick, tmp_path):
    out, _ = quick
    script = load_script()
    study = script.load_study(script.QUICK_STUDY)
    docs = tmp_path / "docs"
    written = script.publish(study, out / "snapshots.csv", docs)
    assert [p.relative_to(docs).as_posix() for p in written] == [
        "benchmarks/snapshots-quick.csv", "benchmarks/snapshots-quick.md", "figures/snapshots-quick.png"]
    page = docs / "benchmarks" / "snapshots-quick.md"
    text = page.read_text()
    assert "Machine: " in text and "](../figures/snapshots-quick.png)" in text
    assert script.published_page_difference(docs, study) == ""
    holm = next(line for line in text.splitlines() if line.startswith("| snapshots=3 − snapshots=1 | method=ce |"))
    cells = holm.split(" | ")
    cells[-2] = "0.001" if cells[-2] != "0.001" else "0.002"  # the Holm p
    page.write_text(text.replace(holm, " | ".join(cells)))
    difference = script.published_page_difference(docs, study)
    assert holm in difference and " | ".join(cells) in difference


def test_committed_page_regenerates_from_its_csv(tmp_path):
    """docs/benchmarks/family-snapshots-fashion-mnist.md is what its committed CSV prints; an edited top-1 fails."""
    script = load_script()
    assert script.published_page_difference(ROOT / "docs") == ""
    shutil.copytree(ROOT / "docs" / "benchmarks", tmp_path / "benchmarks")
    page = tmp_path / "benchmarks" / f"{script.STUDY}.md"
    text = page.read_text(encoding="utf-8")
    assert "not yet regenerated" not in text.lower()
    edited = text.replace("| 83.64 ± 0.41 |", "| 83.65 ± 0.41 |", 1)
    assert edited != text
    page.write_text(edited, encoding="utf-8")
    assert "83.65 ± 0.41" in script.published_page_difference(tmp_path)
