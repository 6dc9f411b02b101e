"""`python -m benchmarks.noise_share`: the noise_source_mass it writes into a published CSV is what each run
recorded when it trained (its metrics), for a small noisy study on digits whose column was blanked."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from olsmooth.studies.results import CSV_NAME
from olsmooth.studies.runner import run_study
from olsmooth.studies.spec import load_study

ROOT = Path(__file__).resolve().parents[1]


def test_the_share_is_what_each_run_recorded(tmp_path):
    spec = tmp_path / "noisy-digits.yaml"
    spec.write_text(yaml.safe_dump({"base": {"dataset": "digits", "epochs": 1, "train_subset": 300, "threads": 1},
                                    "grid": {"noise": ["symmetric:0.4", "pairflip:0.3"], "method": ["ce", "ols"]},
                                    "seeds": [0, 1]}))
    runs = tmp_path / "runs"
    run_study(load_study(str(spec)), runs, log=lambda _line: None)
    rows = list(csv.DictReader((runs / CSV_NAME).open()))
    recorded = {(r["cell"], r["seed"]): r["noise_source_mass"] for r in rows}
    published = tmp_path / "noisy-digits.csv"
    with published.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "noise_source_mass": ""} for r in rows)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    assert importlib.import_module("benchmarks.noise_share").main([str(published), "--study", str(spec)]) == 0
    filled = {(r["cell"], r["seed"]): r["noise_source_mass"] for r in csv.DictReader(published.open())}
    assert filled.keys() == recorded.keys()
    for key, value in filled.items():
        if recorded[key] == "":  # CE runs record no soft labels, hence no share
            assert value == ""
            continue
        metrics = runs / key[0] / f"seed-{key[1]}" / "metrics.jsonl"
        logged = json.loads(metrics.read_text().splitlines()[-1])["noise_source_mass"]
        assert float(value) == pytest.approx(logged, rel=1e-12) and float(value) > 0
