"""`python -m benchmarks.bn_recompute --quick`: the running-statistics top-1 is what training logged, and the
recomputed statistics are the averages of the training batches' statistics, checked by hand on a small layer."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("benchmarks.bn_recompute")


def test_recomputed_statistics_average_the_batches():
    torch.manual_seed(0)
    x = torch.randn(40, 3) * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([5.0, -1.0, 0.5])
    layer = nn.BatchNorm1d(3)
    layer.running_mean.fill_(100.0)  # stale statistics, replaced whole
    model = nn.Sequential(layer)
    loader = DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=10)
    assert load_script().recompute_batch_norm(model, loader, torch.device("cpu")) == 1
    assert not model.training
    torch.testing.assert_close(layer.running_mean, x.mean(dim=0))  # equal batches: the mean of the batch means
    batch_vars = torch.stack([x[i:i + 10].var(dim=0, unbiased=True) for i in range(0, 40, 10)])
    torch.testing.assert_close(layer.running_var, batch_vars.mean(dim=0))


def test_quick_run_checks_each_ce_run(tmp_path, capsys):
    script = load_script()
    out, docs = tmp_path / "out", tmp_path / "docs"
    assert script.main(["--quick", "--threads", "1", "--out", str(out), "--publish", str(docs)]) == 0
    rows = list(csv.DictReader((docs / "benchmarks" / "digits-quick-bn.csv").open()))
    assert [(r["cell"], r["seed"]) for r in rows] == [("method=ce", str(seed)) for seed in (0, 1, 2)]
    for row in rows:
        logged = json.loads((out / "digits-quick" / row["folder"] / "metrics.jsonl").read_text().splitlines()[-1])
        assert float(row["top1_running"]) == pytest.approx(logged["top1"])
        assert float(row["difference"]) == pytest.approx(float(row["top1_recomputed"]) - float(row["top1_running"]))
    assert script.main(["--quick", "--cell", "method=nope", "--out", str(out)]) == 2
    assert "has no cell 'method=nope'" in capsys.readouterr().err
