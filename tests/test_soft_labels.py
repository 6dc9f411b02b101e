"""`olsmooth soft-labels`: per-class statistics of saved soft-label matrices against hand-worked values and numpy,
views for 1,000 classes, and one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from olsmooth.analysis.soft_labels import (
    clustered_order,
    dataset_class_names,
    grid_epochs,
    soft_label_summary,
    top_pair_classes,
    view_order,
)
from olsmooth.cli import main
from olsmooth.runs.checkpoints import save_checkpoint

# rows are soft labels; row 1 ties classes 0 and 2, row 2 ties 0 and 1, row 3 is one-hot
HAND = np.array([[0.70, 0.20, 0.10, 0.00],
                 [0.10, 0.60, 0.10, 0.20],
                 [0.25, 0.25, 0.50, 0.00],
                 [0.00, 0.00, 0.00, 1.00]], dtype=np.float32)
HAND_TOP2 = [[(1, 0.20), (2, 0.10)], [(3, 0.20), (0, 0.10)], [(0, 0.25), (1, 0.25)], [(0, 0.0), (1, 0.0)]]


def numpy_entropy(matrix: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row, 0 log 0 = 0, computed entry by entry."""
    rows = matrix.astype(np.float64)
    return np.array([-sum(p * math.log(p) for p in row / row.sum() if p > 0) for row in rows])


def write_ols_run(folder, matrices: dict[int, np.ndarray], class_names: list[str] | None = None):
    """A run folder with config.yaml, soft_labels/epoch-NNN.npy and, given class names, a best.pt carrying them, as
    an OLS run leaves it (no training; the config names no registered dataset, so nothing else names classes)."""
    (folder / "soft_labels").mkdir(parents=True)
    config = {"method": "ols", "dataset": "hand-made", "seed": 0, "epochs": max(matrices)}
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    if class_names is not None:
        save_checkpoint(folder / "best.pt", {"class_names": class_names, "config": config})
    for epoch, matrix in matrices.items():
        np.save(folder / "soft_labels" / f"epoch-{epoch:03d}.npy", matrix)
    return folder


def run_json(capsys, *argv: str) -> dict:
    assert main(["soft-labels", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_statistics_of_a_hand_made_matrix(tmp_path, capsys):
    early = np.full((4, 4), 0.25, dtype=np.float32)
    run = write_ols_run(tmp_path / "run", {1: early, 3: HAND}, class_names=["cat", "dog", "fox", "owl"])
    out = run_json(capsys, str(run), "--top", "2")
    assert out["epoch"] == 3 and out["epochs_saved"] == [1, 3] and out["num_classes"] == 4
    np.testing.assert_allclose([c["diagonal"] for c in out["classes"]], [0.7, 0.6, 0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose([c["entropy"] for c in out["classes"]], numpy_entropy(HAND), rtol=1e-6)
    assert out["classes"][3]["entropy"] == 0.0
    for row, expected in zip(out["classes"], HAND_TOP2):
        assert [s["class"] for s in row["similar"]] == [j for j, _ in expected]
        np.testing.assert_allclose([s["mass"] for s in row["similar"]], [m for _, m in expected], atol=1e-7)
    assert [s["name"] for s in out["classes"][0]["similar"]] == ["dog", "fox"]
    assert out["max_entropy"] == pytest.approx(math.log(4))
    assert out["mean_diagonal"] == pytest.approx(0.7)
    curves = out["curves"]
    assert curves["epoch"] == [1, 3]
    np.testing.assert_allclose(curves["mean_entropy"], [math.log(4), numpy_entropy(HAND).mean()], rtol=1e-6)
    np.testing.assert_allclose(curves["mean_diagonal"], [0.25, 0.7], rtol=1e-6)


def test_text_output_names_classes_and_an_earlier_epoch(tmp_path, capsys):
    run = write_ols_run(tmp_path / "run", {1: HAND, 2: HAND}, class_names=["cat", "dog", "fox", "owl"])
    assert main(["soft-labels", str(run), "--epoch", "1", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "soft labels after epoch 1" in out
    assert any(line.split()[:2] == ["dog", "0.600"] and "owl (0.200)" in line for line in out.splitlines())


def test_class_names_come_from_best_pt_first(tmp_path, capsys):
    run = write_ols_run(tmp_path / "run", {1: HAND}, class_names=["cat", "dog", "fox", "owl"])
    save_checkpoint(run / "last.pt", {"class_names": ["a", "b", "c", "d"], "config": {}})
    out = run_json(capsys, str(run))
    assert [c["name"] for c in out["classes"]] == ["cat", "dog", "fox", "owl"]


@pytest.fixture(scope="module")
def digits_ols_run(tmp_path_factory) -> Path:
    """A real OLS run: digits, one epoch, as `olsmooth train` leaves it."""
    out = tmp_path_factory.mktemp("runs") / "digits-ols"
    assert main(["train", "--out", str(out), "--epochs", "1"]) == 0
    return out


def test_a_real_run_names_its_classes_from_its_dataset(digits_ols_run, tmp_path):
    assert "class_names" not in yaml.safe_load((digits_ols_run / "config.yaml").read_text())  # options only
    digits = [str(i) for i in range(10)]
    assert dataset_class_names(digits_ols_run) == digits
    assert [c["name"] for c in soft_label_summary(digits_ols_run)["classes"]] == digits
    copied = tmp_path / "no-checkpoint"  # checkpoints deleted: the names still come from config.yaml's dataset
    shutil.copytree(digits_ols_run, copied, ignore=shutil.ignore_patterns("*.pt"))
    assert dataset_class_names(copied) == digits


def test_dataset_class_names_come_from_the_dataset_builder(tmp_path):
    """Names that are not indices: an image-folder dataset's class folders, through config.yaml's data_root."""
    for name in ("cat", "dog", "owl"):
        for split in ("train", "test"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / "data" / split / name / "a.png")
    run = write_ols_run(tmp_path / "run", {1: HAND[:3, :3]})
    config = {"method": "ols", "dataset": "imagefolder", "data_root": str(tmp_path / "data")}
    (run / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert dataset_class_names(run) == ["cat", "dog", "owl"]
    assert [c["name"] for c in soft_label_summary(run)["classes"]] == ["cat", "dog", "owl"]
    (run / "config.yaml").unlink()
    assert dataset_class_names(run) is None


def test_more_similar_classes_asked_than_there_are(tmp_path, capsys):
    out = run_json(capsys, str(write_ols_run(tmp_path / "run", {1: HAND})), "--top", "10")
    assert all(len(c["similar"]) == 3 for c in out["classes"])
    assert [c["name"] for c in out["classes"]] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("extra, message", [
    (["--epoch", "7"], "no soft labels saved for epoch 7; saved: 1, 2"),
    (["--top", "0"], "at least 1"),
    (["--figures", "FIG", "--epochs", "1", "9"], "no soft labels saved for epoch 9"),
])
def test_bad_options_are_one_line(tmp_path, capsys, extra, message):
    run = write_ols_run(tmp_path / "run", {1: HAND, 2: HAND})
    extra = [str(tmp_path / "fig") if e == "FIG" else e for e in extra]
    assert main(["soft-labels", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fig").exists()


def test_a_run_without_soft_labels_is_one_line(tmp_path, capsys):
    (tmp_path / "ce").mkdir()
    (tmp_path / "ce" / "metrics.jsonl").write_text('{"epoch": 1}\n', encoding="utf-8")
    assert main(["soft-labels", str(tmp_path / "ce")]) == 2
    err = capsys.readouterr().err
    assert "soft_labels" in err and len(err.strip().splitlines()) == 1
    assert main(["soft-labels", str(tmp_path / "absent")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_grid_epochs_default_to_first_middle_last():
    files = {e: None for e in (1, 2, 3, 4, 5, 6, 7)}
    assert grid_epochs(files) == [1, 4, 7]
    assert grid_epochs({1: None, 2: None}) == [1, 2]
    assert grid_epochs(files, [5, 2, 5]) == [5, 2]


def blocks_matrix(rng: np.random.Generator, size: int, block: int, diagonal: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels whose off-diagonal mass stays inside blocks of `block` classes, the classes shuffled; returns
    the matrix and each class's block."""
    membership = rng.permutation(np.arange(size) // block)
    same = membership[:, None] == membership[None, :]
    noise = rng.uniform(0.5, 1.5, size=(size, size)) * same
    np.fill_diagonal(noise, 0.0)
    matrix = (1 - diagonal) * noise / noise.sum(axis=1, keepdims=True)
    np.fill_diagonal(matrix, diagonal)
    return matrix.astype(np.float32), membership


def test_clustered_order_keeps_each_block_together():
    matrix, membership = blocks_matrix(np.random.default_rng(0), 200, 10, 0.8)
    order = clustered_order(matrix.astype(np.float64))
    assert sorted(order) == list(range(200))
    runs = np.flatnonzero(np.diff(membership[order])) + 1  # where the block changes along the order
    assert len(runs) == 200 // 10 - 1


def test_top_view_starts_from_the_largest_pair_and_sorted_view_by_diagonal():
    matrix, _ = blocks_matrix(np.random.default_rng(1), 100, 5, 0.9)
    matrix = matrix.astype(np.float64)
    matrix[17, 42], matrix[42, 17] = 0.3, 0.2  # the largest shared off-diagonal mass
    top = top_pair_classes(matrix, limit=30)
    assert len(top) == 30 and len(set(top)) == 30 and list(top[:2]) == [17, 42]
    diagonal = np.diagonal(matrix).copy()
    diagonal[5] = 0.99
    np.fill_diagonal(matrix, diagonal)
    assert view_order(matrix, "sorted")[0] == 5
    assert list(view_order(matrix, "full")) == list(range(100))


def test_a_thousand_classes(tmp_path, capsys):
    rng = np.random.default_rng(2)
    matrices = {epoch: blocks_matrix(rng, 1000, 20, d)[0] for epoch, d in ((1, 0.3), (5, 0.6), (10, 0.9))}
    run = write_ols_run(tmp_path / "run", matrices)
    figures = tmp_path / "figures"
    out = run_json(capsys, str(run), "--top", "3", "--figures", str(figures))
    assert out["num_classes"] == 1000 and len(out["classes"]) == 1000
    np.testing.assert_allclose(out["curves"]["mean_diagonal"], [0.3, 0.6, 0.9], rtol=1e-5)
    expected = [numpy_entropy(matrices[e]).mean() for e in (1, 5, 10)]
    np.testing.assert_allclose(out["curves"]["mean_entropy"], expected, rtol=1e-5)
    row = out["classes"][123]
    off = matrices[10][123].astype(np.float64)
    off[123] = -1
    assert [s["class"] for s in row["similar"]] == list(np.argsort(-off, kind="stable")[:3])
    written = sorted(p.name for p in figures.iterdir())
    assert written == ["soft-labels-clustered.png", "soft-labels-curves.png", "soft-labels-top.png"]
    assert all((figures / name).stat().st_size > 10_000 for name in written)
