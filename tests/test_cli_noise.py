"""Label noise through `olsmooth train --noise KIND:RATE`: the run folder's label files, clean evaluation, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from olsmooth.cli import main
from olsmooth.data import NoiseSpec, build_datasets
from olsmooth.engine.config import build_config
from olsmooth.runs.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise") / "run"
    assert main(["train", "--epochs", "1", "--train-subset", "300", "--noise", " Symmetric:.40", "--noise-seed", "7",
                 "--out", str(out)]) == 0
    return out


def test_the_run_folder_keeps_clean_and_noisy_labels_and_the_realised_transition(noisy_run):
    clean, noisy = np.load(noisy_run / "clean_labels.npy"), np.load(noisy_run / "noisy_labels.npy")
    full = np.array([int(y) for _, y in build_datasets("digits").train])
    np.testing.assert_array_equal(clean, full[np.load(noisy_run / "train_indices.npy")])
    assert (clean != noisy).sum() == 120  # exactly round(0.4 * 300), each to another class
    info = json.loads((noisy_run / "noise.json").read_text())
    assert (info["kind"], info["rate"], info["rate_realised"], info["seed"]) == ("symmetric", 0.4, 0.4, 7)
    counts = np.zeros((10, 10))
    np.add.at(counts, (clean, noisy), 1)
    np.testing.assert_allclose(info["transition"], counts / counts.sum(1, keepdims=True))


def test_a_resumed_run_reads_its_saved_labels(noisy_run, tmp_path, monkeypatch):
    import shutil

    from olsmooth.engine import label_noise
    run = tmp_path / "run"
    shutil.copytree(noisy_run, run)
    monkeypatch.setattr(label_noise, "make_noisy_labels", lambda *a, **k: pytest.fail("labels drawn again"))
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    saved = load_checkpoint(run / "last.pt", keys=("noise",))["noise"]["noisy"].numpy()
    np.testing.assert_array_equal(saved, np.load(noisy_run / "noisy_labels.npy"))


def test_the_trainer_trains_on_the_noisy_labels_and_evaluates_on_clean_ones(tmp_path):
    from olsmooth.engine.config import build_config
    from olsmooth.engine.trainer import Trainer
    trainer = Trainer(build_config(None, {"train_subset": 200, "noise": "pairflip:0.5", "out": str(tmp_path / "r")}))
    labels = [int(trainer.train_loader.dataset[i][1]) for i in range(200)]
    np.testing.assert_array_equal(labels, trainer.noise.noisy)
    assert (trainer.noise.noisy == (trainer.noise.clean + 1) % 10).sum() == 100
    test = build_datasets("digits").test
    assert [int(trainer.bundle.test[i][1]) for i in range(20)] == [int(test[i][1]) for i in range(20)]


def test_the_run_keeps_the_canonical_noise_setting(noisy_run):
    """' Symmetric:.40' was asked for: config.yaml and the checkpoint hold the one spelling every setting has."""
    assert yaml.safe_load((noisy_run / "config.yaml").read_text())["noise"] == "symmetric:0.4"
    assert load_checkpoint(noisy_run / "last.pt", keys=("config",))["config"]["noise"] == "symmetric:0.4"


@pytest.mark.parametrize("spelling", ["symmetric:0.4", "Symmetric:0.4", " SYMMETRIC : 0.40 ", "symmetric:.4",
                                      "symmetric:4e-1"])
def test_every_spelling_of_a_setting_builds_one_configuration(spelling):
    cfg = build_config({"noise": spelling}, {})
    assert cfg.noise == "symmetric:0.4" and cfg.noise_spec == NoiseSpec("symmetric", 0.4)
    assert build_config(None, {"noise": None}).noise_spec is None


@pytest.mark.parametrize("extra, message", [
    (["--noise", "bogus:0.2"], "bogus"), (["--noise", "symmetric:1.0"], "[0, 1)"),
    (["--noise", "symmetric"], "KIND:RATE"), (["--noise", "Uniform:0.2"], "unknown label-noise kind 'uniform'"),
    (["--noise", "symmetric:0.2", "--noise-map", "map.json"], "asymmetric noise only, not to symmetric"),
])
def test_bad_noise_is_one_line_before_a_run_starts_and_writes_nothing(tmp_path, capsys, monkeypatch, extra, message):
    from olsmooth.engine import trainer
    monkeypatch.setattr(trainer, "Trainer", lambda *a, **k: pytest.fail("a run started"))
    out = tmp_path / "run"
    assert main(["train", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "option noise" in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["--noise", "asymmetric:0.4", "--noise-map", "{in}/missing.json"], "missing.json"),
    (["--noise", "asymmetric:0.4", "--noise-map", "{in}/self.json"], "is mapped to itself"),
    (["--method", "forward", "--loss-opt", "transition={in}/missing.npy"], "missing.npy"),
])
def test_bad_noise_map_and_transition_files_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    """Files whose checks need the class count are read as the run is set up, still before its folder exists."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "self.json").write_text('{"3": 3}')
    extra = [e.format(**{"in": tmp_path / "in"}) for e in extra]
    assert main(["train", "--epochs", "1", *extra, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_a_noise_map_without_noise_is_noted(caplog):
    with caplog.at_level("WARNING", logger="olsmooth"):
        build_config(None, {"noise_map": "map.json"})
    assert "noise_map: no effect without asymmetric --noise" in caplog.text


def test_memorisation_is_logged_against_an_independent_count(noisy_run):
    from olsmooth.engine.inference import model_from_checkpoint
    row = json.loads((noisy_run / "metrics.jsonl").read_text().splitlines()[-1])
    clean, noisy = np.load(noisy_run / "clean_labels.npy"), np.load(noisy_run / "noisy_labels.npy")
    positions = np.load(noisy_run / "train_indices.npy")
    ckpt = load_checkpoint(noisy_run / "last.pt")
    model = model_from_checkpoint(ckpt).eval()
    plain = build_datasets("digits", augment="none").train
    changed = np.flatnonzero(clean != noisy)
    with torch.no_grad():
        predicted = np.array([int(model(plain[int(positions[i])][0].unsqueeze(0)).argmax()) for i in changed])
    assert row["noisy_fit_clean"] == pytest.approx(100 * np.mean(predicted == clean[changed]))
    assert row["noisy_fit_noisy"] == pytest.approx(100 * np.mean(predicted == noisy[changed]))
    S = ckpt["loss"]["soft_labels"].double().numpy()
    mass = [sum(S[y, j] for j in range(10) if j != y and np.any((noisy == y) & (clean == j))) for y in range(10)]
    assert row["ols_noise_mass"] == pytest.approx(np.mean(mass))
    sources = [np.mean(clean[noisy == y] != y) for y in range(10)]
    assert row["noise_source_mass"] == pytest.approx(np.mean(sources))
    assert (noisy_run / "memorisation.png").stat().st_size > 0


def sparse_row_entry(index: np.ndarray, value: np.ndarray, residual: np.ndarray, y: int, j: int) -> float:
    """S[y, j] of top-k rows by their definition: the kept value at j, else the residual spread evenly over the
    columns row y does not keep (a float32 quotient, as the rows hold float32 numbers)."""
    kept = [int(c) for c in index[y] if c >= 0]
    if j in kept:
        return float(value[y][list(index[y]).index(j)])
    return float(np.float32(residual[y]) / np.float32(index.shape[0] - len(kept)))


def noise_mass_oracle(entry, clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> float:
    """The mean over rows y of sum S[y, j] over the classes j != y that samples labelled y truly come from."""
    return sum(sum(entry(y, j) for j in set(clean[noisy == y].tolist()) - {y}) for y in range(num_classes)) / (
        num_classes)


def random_sparse_rows(num_classes: int, top_k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k rows as the loss keeps them: distinct columns, some slots empty (-1, value 0), a residual."""
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(num_classes, generator=g)[:top_k] for _ in range(num_classes)]).int()
    index[torch.rand(num_classes, top_k, generator=g) < 0.3] = -1
    value = torch.where(index >= 0, torch.rand(num_classes, top_k, generator=g), 0.0)
    return index, value, torch.rand(num_classes, generator=g)


def test_noise_mass_of_top_k_rows_equals_that_of_their_dense_view_exactly():
    from olsmooth.engine.label_noise import TrainingNoise
    from olsmooth.losses.topk import dense_rows
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 12, 400)
    noisy = np.where(rng.random(400) < 0.4, rng.integers(0, 12, 400), clean)
    noise = TrainingNoise(clean, noisy, {})
    rows = random_sparse_rows(12, 4, 1)
    sparse = noise.soft_label_mass(rows)
    dense = noise.soft_label_mass(dense_rows(*rows, 12))
    assert sparse == dense  # the same entries read, the same sums: equal to the last bit
    arrays = [t.numpy() for t in rows]
    expected = noise_mass_oracle(lambda y, j: sparse_row_entry(*arrays, y, j), clean, noisy, 12)
    assert sparse["ols_noise_mass"] == pytest.approx(expected, rel=1e-12)
    sources = np.mean([np.mean(clean[noisy == y] != y) if np.any(noisy == y) else 0.0 for y in range(12)])
    assert sparse["noise_source_mass"] == pytest.approx(sources, rel=1e-12)


def test_noise_mass_of_top_k_rows_beyond_the_dense_view_limit_reads_only_the_pairs():
    import tracemalloc

    from olsmooth.engine.label_noise import TrainingNoise
    from olsmooth.losses.topk import DENSE_VIEW_MAX_CLASSES
    K = 3 * DENSE_VIEW_MAX_CLASSES
    rng = np.random.default_rng(2)
    clean = rng.integers(0, K, 3000)
    noisy = np.where(rng.random(3000) < 0.5, rng.integers(0, K, 3000), clean)
    noisy[:40] = 7  # one row with many source classes; some pairs hit a kept column
    rows = random_sparse_rows(K, 6, 3)
    rows[0][7, :5] = torch.from_numpy(clean[:5]).int()
    tracemalloc.start()
    found = TrainingNoise(clean, noisy, {}).soft_label_mass(rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * K * 10, peak  # O(N + K), nothing of K x K (a dense view would be 8 K^2 bytes)
    arrays = [t.numpy() for t in rows]
    expected = noise_mass_oracle(lambda y, j: sparse_row_entry(*arrays, y, j), clean, noisy, K)
    assert found["ols_noise_mass"] == pytest.approx(expected, rel=1e-12) and expected > 0


def test_memorisation_of_a_top_k_run_reads_its_sparse_rows(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--train-subset", "300", "--noise", "symmetric:0.4", "--noise-seed", "7",
                 "--loss-opt", "top_k=3", "--threads", "1", "--out", str(out)]) == 0
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    clean, noisy = np.load(out / "clean_labels.npy"), np.load(out / "noisy_labels.npy")
    state = load_checkpoint(out / "last.pt")["loss"]
    arrays = [state[f"soft_labels_{part}"].numpy() for part in ("index", "value", "residual")]
    expected = noise_mass_oracle(lambda y, j: sparse_row_entry(*arrays, y, j), clean, noisy, 10)
    assert row["ols_noise_mass"] == pytest.approx(expected, rel=1e-9) and expected > 0


def test_forward_correction_takes_the_known_matrix_or_a_file(noisy_run, tmp_path, capsys):
    known = tmp_path / "known"
    assert main(["train", "--epochs", "1", "--train-subset", "300", "--noise", "symmetric:0.4", "--noise-seed", "7",
                 "--method", "forward", "--out", str(known)]) == 0
    used = json.loads((known / "transition.json").read_text())
    assert used["source"] == "known"
    np.testing.assert_allclose(used["transition"], json.loads((noisy_run / "noise.json").read_text())["transition"],
                               atol=1e-6)
    matrix = tmp_path / "T.npy"
    np.save(matrix, np.full((10, 10), 0.1))
    given = tmp_path / "given"
    assert main(["train", "--epochs", "1", "--train-subset", "300", "--method", "backward", "--loss-opt",
                 f"transition={matrix}", "--out", str(given)]) == 2  # a singular matrix cannot be inverted
    assert "invertible" in capsys.readouterr().err and not given.exists()
    assert main(["train", "--epochs", "1", "--train-subset", "300", "--method", "forward", "--loss-opt",
                 f"transition={matrix}", "--out", str(given)]) == 0
    np.testing.assert_allclose(json.loads((given / "transition.json").read_text())["transition"], 0.1, atol=1e-6)
    assert main(["train", "--epochs", "1", "--method", "forward", "--out", str(tmp_path / "no-noise")]) == 2
    assert "needs --noise" in capsys.readouterr().err


def test_forward_correction_reads_the_known_matrix_from_the_sparse_form(tmp_path, monkeypatch):
    from olsmooth import noise_transition
    monkeypatch.setattr(noise_transition, "DENSE_RECORD_MAX_CLASSES", 5)  # the digits' 10 classes: pairs
    out = tmp_path / "sparse"
    assert main(["train", "--epochs", "1", "--train-subset", "300", "--noise", "symmetric:0.4", "--noise-seed", "7",
                 "--method", "forward", "--out", str(out)]) == 0
    record = json.loads((out / "noise.json").read_text())
    assert "transition" not in record and record["transition_sparse"]["classes"] == 10
    clean, noisy = np.load(out / "clean_labels.npy"), np.load(out / "noisy_labels.npy")
    counts = np.zeros((10, 10))
    np.add.at(counts, (clean, noisy), 1)
    used = json.loads((out / "transition.json").read_text())["transition"]
    np.testing.assert_allclose(used, counts / counts.sum(1, keepdims=True), atol=1e-6)

def test_forward_correction_estimates_the_matrix_from_a_cross_entropy_run_first(tmp_path):
    from olsmooth.engine.inference import model_from_checkpoint
    from olsmooth.losses.correction import estimate_transition
    out = tmp_path / "estimate"
    args = ["train", "--epochs", "2", "--train-subset", "200", "--noise", "pairflip:0.3", "--method", "forward",
            "--loss-opt", "transition=estimate", "--out", str(out)]
    assert main(args) == 0
    stage = out / "transition-estimate"
    stage_config = json.loads(json.dumps(load_checkpoint(stage / "last.pt")["config"]))
    assert stage_config["method"] == "ce" and stage_config["noise"] == "pairflip:0.3"
    np.testing.assert_array_equal(np.load(stage / "noisy_labels.npy"), np.load(out / "noisy_labels.npy"))
    model = model_from_checkpoint(load_checkpoint(stage / "last.pt")).eval()
    plain = build_datasets("digits", augment="none").train
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(plain[int(i)][0].unsqueeze(0)), 1)
                           for i in np.load(out / "train_indices.npy")])
    used = json.loads((out / "transition.json").read_text())
    assert used["source"] == "estimate"
    np.testing.assert_allclose(used["transition"], estimate_transition(probs).numpy(), atol=1e-5)
    saved = load_checkpoint(out / "last.pt", keys=("loss",))["loss"]
    assert any(torch.is_tensor(v) and v.shape == (10, 10) for v in saved.values())  # the matrix resumes with the run
