"""End to end through the `olsmooth` command: training on digits, the run folder, eval, ensemble, resume, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from olsmooth.cli import main
from olsmooth.data import build_datasets
from olsmooth.engine.inference import evaluate_checkpoints, evaluate_each, model_from_checkpoint, pick_snapshots
from olsmooth.runs.checkpoints import load_checkpoint

CLI = [sys.executable, "-m", "olsmooth.cli"]
FAST = ["--epochs", "3", "--save-every", "1"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def untimed(rows: list[dict]) -> list[dict]:
    """Metrics rows without the wall-clock fields, which differ between any two runs."""
    return [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s")} for r in rows]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> Path:
    """The default job, exactly as `olsmooth train` runs it, plus snapshots for the ensemble tests."""
    out = tmp_path_factory.mktemp("runs") / "default"
    assert main(["train", "--out", str(out), "--save-every", "1"]) == 0
    return out


def test_default_run_writes_the_run_folder_and_reaches_90_percent(default_run):
    rows = metrics(default_run)
    assert rows[-1]["top1"] >= 90.0
    for key in ("epoch", "train_loss", "top1", "top5", "nll", "ece", "lr"):
        assert key in rows[0]
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    for name in ("config.yaml", "last.pt", "best.pt", "epoch-001.pt", "soft_labels/epoch-001.npy",
                 "soft_labels/epoch-001.png"):
        assert (default_run / name).is_file(), name
    assert list((default_run / "tensorboard").glob("events.out.tfevents.*"))
    cfg = yaml.safe_load((default_run / "config.yaml").read_text())
    assert cfg["dataset"] == "digits" and cfg["method"] == "ols" and cfg["model"] == "small_cnn"
    S = np.load(default_run / "soft_labels" / f"epoch-{len(rows):03d}.npy")
    np.testing.assert_allclose(S.sum(axis=1), 1.0, atol=1e-5)


def test_logged_accuracy_matches_a_plain_evaluation_of_the_checkpoint(default_run):
    ckpt = load_checkpoint(default_run / "last.pt")
    model = model_from_checkpoint(ckpt).eval()
    bundle = build_datasets("digits", channels=ckpt["channels"])
    correct = 0
    with torch.no_grad():
        for i in range(len(bundle.test)):
            x, y = bundle.test[i]
            correct += int(model(x.unsqueeze(0)).argmax(1).item() == y)
    assert 100.0 * correct / len(bundle.test) == pytest.approx(metrics(default_run)[-1]["top1"], abs=1e-9)


def test_eval_json_and_predictions_agree_with_numpy(default_run, tmp_path, capsys):
    npz = tmp_path / "pred.npz"
    assert main(["eval", "--checkpoint", str(default_run / "last.pt"), "--json", "--calibration-data", "none",
                 "--save-predictions", str(npz)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "nll", "ece"} <= set(result) and result["calibration_data"] == "none"
    data = np.load(npz)
    probs, labels = data["probs"], data["labels"]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert result["top1"] == pytest.approx(100 * np.mean(probs.argmax(1) == labels))
    nll = -np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)))
    assert result["nll"] == pytest.approx(nll, rel=1e-4)
    assert result["top1"] == pytest.approx(metrics(default_run)[-1]["top1"])


def test_ensemble_of_snapshots(default_run, capsys):
    assert main(["ensemble", "--from-run", str(default_run), "--count", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"top1", "top5", "nll", "ece"} and result["top1"] > 80
    last = str(default_run / "last.pt")
    assert main(["ensemble", last, last, "--json"]) == 0
    twice = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", last, "--json", "--calibration-data", "none"]) == 0
    once = json.loads(capsys.readouterr().out)
    assert twice == pytest.approx({k: once[k] for k in twice})


def test_evaluate_each_gives_every_member_and_every_ensemble_of_them(default_run, tmp_path):
    paths = pick_snapshots(default_run, 3)
    saved = []
    for i, path in enumerate(paths):  # each member's probabilities, as --save-predictions writes them
        evaluate_checkpoints([path], predictions=tmp_path / f"{i}.npz")
        saved.append(np.load(tmp_path / f"{i}.npz"))
    labels = saved[0]["labels"]
    with evaluate_each([*paths, paths[0]]) as members:  # a path given twice is evaluated once
        for subset in (paths, paths[:1], paths[1:]):
            probs = np.mean([saved[paths.index(p)]["probs"] for p in subset], axis=0)
            found = members.ensemble(subset).compute()
            assert found["top1"] == pytest.approx(100 * np.mean(probs.argmax(1) == labels))
            nll = -np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)))
            assert found["nll"] == pytest.approx(nll, rel=1e-5)
            together = evaluate_checkpoints(subset).metrics  # the ensemble evaluated in one pass
            assert {key: found[key] for key in together} == pytest.approx(together, rel=1e-6)
        assert members.ensemble(paths[-1:]).compute()["top1"] == pytest.approx(metrics(default_run)[-1]["top1"])


def test_recipe_file_with_command_line_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: ls\nls_eps: 0.2\nepochs: 5\nbatch_size: 128\n")
    out = tmp_path / "run"
    assert main(["train", "-c", str(recipe), "--epochs", "1", "--out", str(out)]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["method"], cfg["loss_options"], cfg["epochs"], cfg["batch_size"]) == ("ls", {"eps": 0.2}, 1, 128)
    assert len(metrics(out)) == 1


@pytest.mark.parametrize("extra", [["--mixup", "0.2", "--cutmix", "1.0"], ["--ema-decay", "0.9"],
                                   ["--method", "tfkd"], ["--method", "ce", "--sched", "multistep",
                                                          "--milestones", "1", "--optimizer", "adamw", "--lr",
                                                          "0.001"]])
def test_training_options_run(tmp_path, extra):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *extra]) == 0
    row = metrics(out)[0]
    assert np.isfinite(row["train_loss"]) and row["top1"] > 10
    if "--ema-decay" in extra:
        assert "ema_top1" in row


def fails_with(capsys, argv: list[str], message: str) -> None:
    """The command exits 2 with exactly one line on stderr that contains `message`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_existing_run_folder_is_kept_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    fails_with(capsys, ["train", "--epochs", "1", "--out", str(out)], "already exists")
    assert (out / "keep.txt").read_text() == "precious"


def test_resume_with_another_model_is_refused(default_run, capsys):
    fails_with(capsys, ["train", "--resume", str(default_run), "--model", "mlp"], "different experiment")


def _corrupt_image_tree(root: Path) -> None:
    from PIL import Image
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(root / split / cls / f"{i}.jpg")
    (root / "train" / "a" / "bad.jpg").write_bytes(b"not a jpeg at all")


@pytest.mark.parametrize("case, message", [
    (["--dataset", "nope"], "nope"),
    (["--model", "no_such_net"], "no_such_net"),
    (["--method", "nope"], "unknown method"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--dataset", "imagefolder", "--model", "small_cnn", "--image-size", "32", "--workers", "0"], "bad.jpg"),
    (["-c", "no-such-recipe"], "no-such-recipe"),
])
def test_bad_input_exits_2_with_one_line_and_changes_no_file(default_run, tmp_path, capsys, case, message):
    """With --force over a finished run, and into a new folder: nothing is created, removed or rewritten."""
    if "imagefolder" in case:
        _corrupt_image_tree(tmp_path / "tree")
        case = [*case, "--data-root", str(tmp_path / "tree")]
    shutil.copytree(default_run, tmp_path / "old")
    before = everything(tmp_path)
    fails_with(capsys, ["train", "--epochs", "1", "--out", str(tmp_path / "old"), "--force", *case], message)
    assert everything(tmp_path) == before
    fails_with(capsys, ["train", "--epochs", "1", "--out", str(tmp_path / "new"), *case], message)
    assert everything(tmp_path) == before


def everything(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder`, hidden ones and folders included, by relative path: a file's bytes, else None."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def test_corrupt_image_in_a_worker_process_is_one_line(tmp_path):
    _corrupt_image_tree(tmp_path / "tree")
    done = run_cli("train", "--epochs", "1", "--out", str(tmp_path / "run"), "--dataset", "imagefolder",
                   "--data-root", str(tmp_path / "tree"), "--model", "small_cnn", "--image-size", "32",
                   "--workers", "1")
    assert done.returncode == 2 and "bad.jpg" in done.stderr and "Traceback" not in done.stderr


def test_checkpoint_with_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "olsmooth-checkpoint-1", "payload": Path("x")}, path)
    fails_with(capsys, ["eval", "--checkpoint", str(path)], "refusing")


def test_lists(capsys):
    for flag, expected in (("--list-models", "small_cnn"), ("--list-datasets", "digits"),
                           ("--list-methods", "ols")):
        assert main(["train", flag]) == 0
        assert expected in capsys.readouterr().out


def test_train_subset_is_stratified_and_seeded_and_evaluation_keeps_all(tmp_path):
    from olsmooth.engine.config import build_config
    from olsmooth.engine.trainer import Trainer
    cfg = {"train_subset": 100, "epochs": 1, "out": str(tmp_path / "r")}
    trainer = Trainer(build_config(None, cfg))
    full = build_datasets("digits")
    subset = trainer.train_loader.dataset
    assert len(subset) == 100 and len(trainer.bundle.test) == len(full.test)
    labels = np.array([int(full.train[i][1]) for i in subset.indices])
    assert np.bincount(labels, minlength=10).min() >= 9  # every class, about 10 each, not the first 100 in order
    x, y = subset[5]
    assert y == full.train[subset.indices[5]][1] and torch.equal(x, full.train[subset.indices[5]][0])
    again = Trainer(build_config(None, cfg))
    assert again.train_loader.dataset.indices == subset.indices
    other = Trainer(build_config(None, {**cfg, "seed": 1}))
    assert other.train_loader.dataset.indices != subset.indices


def test_a_loss_that_keeps_per_sample_state_receives_each_training_index_once_per_epoch(tmp_path, monkeypatch):
    from olsmooth.engine import trainer as trainer_module
    from olsmooth.engine.config import build_config
    from olsmooth.engine.trainer import Trainer
    from olsmooth.losses import CrossEntropy

    class Recording(CrossEntropy):
        needs_index = True

        def __init__(self, num_classes: int) -> None:
            super().__init__(num_classes)
            self.seen: list[int] = []

        def forward(self, logits, target, index):  # type: ignore[override]
            self.seen += index.tolist()
            return super().forward(logits, target)

    monkeypatch.setattr(trainer_module, "build_loss", lambda name, num_classes, **options: Recording(num_classes))
    trainer = Trainer(build_config(None, {"train_subset": 200, "method": "ce", "out": str(tmp_path / "r")}))
    trainer.start_epoch(0)
    trainer.train_one_epoch()
    assert sorted(trainer.criterion.seen) == list(range(200))


@pytest.mark.parametrize("bad_input", [False, True])
def test_only_a_loss_input_error_becomes_a_one_line_user_error(tmp_path, monkeypatch, bad_input):
    """A loss's ValueError from a bug keeps its type and traceback; LossInputError (labels out of range, non-finite
    logits) is the user's problem and becomes one line naming the step. The old trainer turned both into the latter."""
    from olsmooth.engine import trainer as trainer_module
    from olsmooth.engine.config import build_config
    from olsmooth.engine.trainer import Trainer
    from olsmooth.errors import UserInputError
    from olsmooth.losses import CrossEntropy, LossInputError

    class Failing(CrossEntropy):
        def forward(self, logits, target):  # type: ignore[override]
            raise (LossInputError if bad_input else ValueError)("something is off")

    monkeypatch.setattr(trainer_module, "build_loss", lambda name, num_classes, **options: Failing(num_classes))
    trainer = Trainer(build_config(None, {"train_subset": 50, "method": "ce", "out": str(tmp_path / "r")}))
    trainer.start_epoch(0)
    with pytest.raises(ValueError, match="something is off") as caught:
        trainer.train_one_epoch()
    assert isinstance(caught.value, UserInputError) == bad_input
    if bad_input:
        assert str(caught.value) == "epoch 1, step 1: something is off"


def test_model_options_reach_the_network_and_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--model", "mlp", "--model-opt", "grid=4", "--model-opt", "hidden=[32]",
                 "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["model_options"] == {"grid": 4, "hidden": [32]}
    assert ckpt["model"]["2.weight"].shape == (32, 4 * 4)  # pooled to 4 x 4, one hidden layer of 32
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--json", "--calibration-data", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(metrics(out)[-1]["top1"])
    assert main(["train", "--epochs", "1", "--model", "mlp", "--model-opt", "colour=1", "--out",
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "colour" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_input_norm_reaches_the_training_data_and_the_checkpoints_evaluation(tmp_path, capsys):
    from olsmooth.engine.inference import data_for_checkpoint
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--input-norm", "imagenet", "--out", str(out)]) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["config"]["input_norm"] == "imagenet"
    assert data_for_checkpoint(ckpt).mean == pytest.approx((0.449,))
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--json", "--calibration-data", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["nll"] == pytest.approx(metrics(out)[-1]["nll"])


def test_cskd_trains_on_batches_of_same_class_pairs(tmp_path):
    from olsmooth.engine.config import build_config
    from olsmooth.engine.trainer import Trainer
    trainer = Trainer(build_config(None, {"method": "cskd", "train_subset": 300, "batch_size": 16, "epochs": 1,
                                          "out": str(tmp_path / "r")}))
    trainer.start_epoch(0)
    batches = [labels for _, labels in trainer.train_loader]
    assert all(torch.equal(b[: len(b) // 2], b[len(b) // 2:]) for b in batches)
    assert sum(len(b) for b in batches) // 2 >= 300 - 16  # every sample is an anchor about once per epoch
    assert trainer.fit()["epochs"] == 1
