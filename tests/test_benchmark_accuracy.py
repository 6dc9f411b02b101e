"""`python -m benchmarks.accuracy` end to end on digits: tables against the run folders, ensembles, transfer, skip."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from olsmooth.analysis import final_metrics
from olsmooth.models import create_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--models", "small_cnn", "--methods", "ce", "ls", "ols", "--seeds", "2", "--epochs", "2",
        "--subset", "320", "--batch-size", "64", "--threads", "1", "--device", "cpu"]
MAIN_METHODS = ("ce", "ls", "ols")


def load_script():
    """The study as the package module `python -m benchmarks.accuracy` runs (the repository root on sys.path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.accuracy")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One tiny study with the transfer protocol on a locally written weights file, and its printed lines."""
    root = tmp_path_factory.mktemp("study")
    weights = root / "small_cnn-weights.pth"
    torch.manual_seed(0)
    torch.save(create_model("small_cnn", num_classes=10, in_chans=1).state_dict(), weights)
    script = load_script()
    argv = [*TINY, "--out", str(root / "out"), "--pretrained", str(weights), "--pretrained-model", "small_cnn"]
    return script, root / "out", argv


def test_tables_match_the_run_folders(study, capsys):
    script, out, argv = study
    assert script.main(argv) == 0
    payload = json.loads((out / "accuracy.json").read_text())
    main = payload["studies"]["small_cnn"]
    root = Path(main["root"])
    assert root.name == "small_cnn-n320-e2-b64"
    by_label = {row["method"]: row for row in main["summary"]}
    assert list(by_label) == [script.METHODS[key][0] for key in MAIN_METHODS]
    for key in MAIN_METHODS:
        label = script.METHODS[key][0]
        finals = [final_metrics(root / key / f"seed-{s}") for s in range(2)]
        assert by_label[label]["n"] == 2
        assert by_label[label]["top1"]["mean"] == pytest.approx(np.mean([f["top1"] for f in finals]))
        assert by_label[label]["top1"]["std"] == pytest.approx(np.std([f["top1"] for f in finals], ddof=1))
        assert by_label[label]["train_top1"]["mean"] == pytest.approx(np.mean([f["train_top1"] for f in finals]))
    # the OLS variant against both baselines on three metrics
    assert len(main["paired_tests"]) == 2 * 3
    md = (out / "accuracy.md").read_text()
    assert "# Accuracy on scikit-learn digits" in md and "first 320 training images" in md
    assert all(Path(p).is_file() for p in main["figures"])


def test_single_snapshot_ensemble_is_the_trained_model(study):
    """The ensemble path (snapshots evaluated afresh) agrees with the trainer's own last-epoch evaluation."""
    script, out, _ = study
    main = json.loads((out / "accuracy.json").read_text())["studies"]["small_cnn"]
    root = Path(main["root"])
    rows = main["ensembles"]
    assert {(r["method"], r["snapshots"]) for r in rows} == {
        (script.METHODS[key][0], n) for key in MAIN_METHODS for n in ("1", "2")}
    for row in (r for r in rows if r["snapshots"] == "1" and r["method"] == "CE"):
        trained = final_metrics(root / "ce" / f"seed-{row['seed']}")
        assert row["top1"] == pytest.approx(trained["top1"])
        assert row["nll"] == pytest.approx(trained["nll"], rel=1e-4)
    summary = {(r["method"], r["snapshots"]): r for r in main["ensemble_summary"]}
    for key in MAIN_METHODS:
        label = script.METHODS[key][0]
        top1 = {(r["seed"], r["snapshots"]): r["top1"] for r in rows if r["method"] == label}
        assert summary[label, "1"]["gain"]["mean"] == 0 and summary[label, "2"]["n"] == 2
        gains = [top1[seed, "2"] - top1[seed, "1"] for seed in ("0", "1")]
        assert summary[label, "2"]["gain"]["mean"] == pytest.approx(np.mean(gains))


def test_transfer_study_runs_on_a_local_weights_file(study):
    _, out, _ = study
    studies = json.loads((out / "accuracy.json").read_text())["studies"]
    transfer = studies["small_cnn (ImageNet-pretrained, 64x64)"]
    assert {row["method"] for row in transfer["summary"]} == {"CE", "LS (eps 0.1)", "OLS paper-fine-grained"}
    run = Path(transfer["root"]) / "ols-fg" / "seed-0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["image_size"] == 64 and config["loss_options"] == {"preset": "paper-fine-grained"}
    assert config["pretrained"].endswith("small_cnn-weights.pth")


def test_rerun_skips_complete_runs_and_missing_weights_skip_cleanly(study, capsys):
    script, out, argv = study
    capsys.readouterr()
    absent = [*argv[:argv.index("--pretrained")], "--pretrained", str(out / "absent.pth")]
    assert script.main(absent) == 0
    printed = capsys.readouterr().out
    assert "transfer study skipped: weights file" in printed and "absent.pth not found" in printed
    trained = [line for line in printed.splitlines() if " seed " in line]
    assert len(trained) == 6 and all(line.endswith("skipped (complete)") for line in trained)
    assert list(json.loads((out / "accuracy.json").read_text())["studies"]) == ["small_cnn"]
