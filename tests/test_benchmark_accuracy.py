"""`python -m benchmarks.accuracy --quick` end to end on digits: the accuracy-quick study trained through the study
runner, tables against the run folders, published pages, ensembles, transfer on a local weights file, rerun skips."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

from olsmooth.models import create_model

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--quick", "--threads", "1", "--device", "cpu"]
# the cells of accuracy-quick.yaml, in grid order, as folder names
CELLS = ["model=small_cnn,method=ce", "model=small_cnn,method=ls,ls_eps=0.1",
         "model=small_cnn,method=ols,ols_preset=paper-cifar", "model=small_cnn,method=ols",
         "model=small_cnn,method=tfkd"]
SEEDS = (0, 1)


def load_script():
    """The study as the package module `python -m benchmarks.accuracy` runs (the repository root on sys.path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.accuracy")


def last_record(folder: Path) -> dict:
    """The last line of a run's metrics.jsonl, read directly."""
    return json.loads((folder / "metrics.jsonl").read_text().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The quick study plus the transfer protocol on a locally written weights file, run once."""
    root = tmp_path_factory.mktemp("study")
    weights = root / "small_cnn-weights.pth"
    torch.manual_seed(0)
    torch.save(create_model("small_cnn", num_classes=10, in_chans=1).state_dict(), weights)
    script = load_script()
    argv = [*QUICK, "--out", str(root / "out"), "--pretrained", str(weights), "--pretrained-model", "small_cnn",
            "--publish", str(root / "docs")]
    assert script.main(argv) == 0
    return script, root / "out", argv


def test_tables_match_the_run_folders(study):
    _, out, _ = study
    main = json.loads((out / "accuracy.json").read_text())["studies"]["accuracy-quick"]
    root = out / "accuracy-quick"
    assert Path(main["root"]) == root and (root / "results.md").is_file() and (root / "results.csv").is_file()
    finals = {cell: [last_record(root / cell / f"seed-{s}") for s in SEEDS] for cell in CELLS}
    assert [(row["method"], row.get("ls_eps"), row.get("ols_preset")) for row in main["summary"]] == [
        ("ce", None, None), ("ls", 0.1, None), ("ols", None, "paper-cifar"), ("ols", None, None), ("tfkd", None, None)]
    for row, cell in zip(main["summary"], CELLS):
        assert row["n"] == 2
        for key in ("top1", "top5", "train_top1"):
            values = [f[key] for f in finals[cell]]
            assert row[key]["mean"] == pytest.approx(np.mean(values))
            assert row[key]["std"] == pytest.approx(np.std(values, ddof=1))
    # every other cell against CE and against LS, on top-1, NLL and ECE
    assert len(main["paired_tests"]) == 2 * 4 * 3
    ols_ce = next(r for r in main["paired_tests"]
                  if r["comparison"] == "method=ols − method=ce" and r["metric"] == "top1")
    ols, ce = ([f["top1"] for f in finals[cell]] for cell in (CELLS[3], CELLS[0]))
    assert ols_ce["mean diff"] == pytest.approx(np.mean(np.subtract(ols, ce)))
    assert ols_ce["t-test p"] == pytest.approx(stats.ttest_rel(ols, ce).pvalue)
    md = (out / "accuracy.md").read_text()
    assert "# Accuracy on scikit-learn digits" in md and "first 320 training images" in md
    assert all(Path(p).is_file() for p in main["figures"])
    names = {Path(p).name for p in main["figures"]}
    assert {"small_cnn-n320-e2-top1.png", "small_cnn-n320-e2-reliability-ols-paper.png",
            "small_cnn-n320-e2-reliability-tfkd.png", "small_cnn-n320-e2-soft-labels-ols.png"} <= names


def test_published_pages_regenerate_and_a_single_snapshot_is_the_trained_model(study):
    """--publish: the study's page and its snapshot ensembles, each regenerated from the CSV beside it; the ensemble
    path (snapshots evaluated afresh) agrees with the trainer's own last-epoch evaluation."""
    from olsmooth.studies.publish import published_page_difference
    script, out, argv = study
    docs, quick = out.parent / "docs", script.main_study(script.parse_args(argv))  # the study as run (--device)
    snapshots = importlib.import_module("benchmarks.snapshots")
    assert published_page_difference(quick, docs) == ""
    assert snapshots.published_page_difference(docs, quick) == ""
    rows = snapshots.read_csv(quick, docs / "benchmarks" / "accuracy-quick-snapshots.csv")
    # 2 epochs: after epoch 1 the last snapshot alone; over all of training also both snapshots
    assert sorted({(r["after"], r["snapshots"]) for r in rows}) == [(0, 1), (0, 2), (1, 1)]
    assert {(r["cell"], r["seed"]) for r in rows} == {(cell, seed) for cell in CELLS for seed in SEEDS}
    for row in (r for r in rows if r["snapshots"] == 1):
        trained = last_record(out / "accuracy-quick" / row["cell"] / f"seed-{row['seed']}")
        assert row["top1"] == pytest.approx(trained["top1"])
        assert row["nll"] == pytest.approx(trained["nll"], rel=1e-4)
    assert (docs / "figures" / "accuracy-quick-snapshots.png").stat().st_size > 0
    page = (docs / "benchmarks" / "accuracy-quick-snapshots.md").read_text()
    assert "after epoch 1" not in page and "## Snapshots over all of training" in page  # no ensemble after epoch 1


def test_transfer_study_runs_on_a_local_weights_file(study):
    _, out, _ = study
    transfer = json.loads((out / "accuracy.json").read_text())["studies"]["accuracy-quick-transfer-small_cnn"]
    assert [row["method"] for row in transfer["summary"]] == ["ce", "ls", "ols"]
    run = out / "accuracy-quick-transfer-small_cnn" / "method=ols,ols_preset=paper-fine-grained" / "seed-0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["image_size"] == 64 and config["loss_options"] == {"preset": "paper-fine-grained"}
    assert config["pretrained"].endswith("small_cnn-weights.pth") and config["train_subset"] == 320


def test_rerun_skips_complete_runs_and_missing_weights_skip_cleanly(study, capsys):
    script, out, argv = study
    capsys.readouterr()
    absent = [*argv[:argv.index("--pretrained")], "--pretrained", str(out / "absent.pth")]
    assert script.main(absent) == 0
    printed = capsys.readouterr().out
    assert "transfer study skipped: weights file" in printed and "absent.pth not found" in printed
    runs = [line for line in printed.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert len(runs) == 10 and all(line.endswith(": done, skipped") for line in runs)
    assert list(json.loads((out / "accuracy.json").read_text())["studies"]) == ["accuracy-quick"]


def test_dataset_and_subset_replace_the_study_base_and_name_its_folder():
    script = load_script()
    study = script.main_study(script.parse_args(["--quick", "--dataset", "digits", "--subset", "200", "--seeds", "3"]))
    assert study.name == "accuracy-quick-train_subset=200"  # digits is the study's own dataset: not an override
    assert study.seeds == (0, 1, 2) and {cell.config.train_subset for cell in study.cells} == {200}
    whole = script.main_study(script.parse_args(["--quick", "--subset", "0"]))
    assert whole.name == "accuracy-quick-train_subset=-" and {c.config.train_subset for c in whole.cells} == {None}


def test_a_bad_study_is_one_line_and_status_2(tmp_path, capsys):
    script = load_script()
    assert script.main(["--study", "no-such-study", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no study file or shipped study 'no-such-study'" in err
    assert not any(tmp_path.iterdir())
