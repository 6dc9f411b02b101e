"""The self-distillation and adaptive-smoothing methods through `olsmooth train`, and an interrupted run resumed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from olsmooth.cli import main
from olsmooth.runs import writer
from olsmooth.runs.checkpoints import load_checkpoint

QUICK = ["--epochs", "2", "--train-subset", "200"]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def untimed(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in metrics]


@pytest.mark.parametrize("method", ["zipf", "maxsup", "pskd"])
def test_train_runs_the_method(tmp_path, method):
    out = tmp_path / method
    assert main(["train", "--method", method, *QUICK, "--out", str(out)]) == 0
    metrics = rows(out)
    assert [r["epoch"] for r in metrics] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) for r in metrics)
    loss_state = load_checkpoint(out / "last.pt", keys=("loss",))["loss"]
    if method == "pskd":
        store = loss_state["_extra_state"]
        assert store["predictions"].shape == (200, 10) and store["epoch"] == 2
        torch.testing.assert_close(store["predictions"].sum(1), torch.ones(200))  # every sample stored once
    if method == "maxsup":
        assert loss_state["_extra_state"]["epoch"] == 2


class Interrupted(Exception):
    """Stands for a kill right after the first epoch's last.pt."""


@pytest.mark.parametrize("method", ["pskd", "maxsup"])
def test_an_interrupted_run_resumed_equals_the_uninterrupted_run(tmp_path, monkeypatch, method):
    args = ["train", "--method", method, *QUICK]
    if method == "maxsup":
        args += ["--loss-opt", "schedule=step"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main([*args, "--out", str(whole)]) == 0
    real = writer.save_checkpoint

    def save_then_die(path: Path, payload: dict) -> None:
        real(path, payload)
        if path.name == "last.pt" and payload["epoch"] == 1:
            raise Interrupted

    monkeypatch.setattr(writer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        main([*args, "--out", str(broken)])
    monkeypatch.setattr(writer, "save_checkpoint", real)
    assert main(["train", "--resume", str(broken)]) == 0
    assert untimed(rows(broken)) == untimed(rows(whole))
    a, b = (load_checkpoint(run / "last.pt", keys=("loss",))["loss"]["_extra_state"] for run in (whole, broken))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key], key


def test_cskd_trains_through_the_public_trainer_api_with_the_pair_sampler(tmp_path):
    from torch.utils.data import DataLoader

    from olsmooth.data import dataset_labels
    from olsmooth.data.samplers import ClassPairBatchSampler
    from olsmooth.engine.config import build_config
    from olsmooth.engine.trainer import Trainer

    trainer = Trainer(build_config(None, {"method": "cskd", "train_subset": 200, "out": str(tmp_path / "run")}))
    assert trainer.criterion.needs_class_pairs
    sampler = ClassPairBatchSampler(dataset_labels(trainer.bundle.train), trainer.cfg.batch_size,
                                    generator=torch.Generator().manual_seed(0))
    result = trainer.train_one_epoch(DataLoader(trainer.bundle.train, batch_sampler=sampler))
    assert math.isfinite(result["loss"]) and result["images"] == 400  # each of the 200 anchors with a partner
