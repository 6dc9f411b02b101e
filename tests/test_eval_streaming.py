"""`olsmooth eval` at many classes: every metric, before and after temperature scaling, equals a straightforward
numpy oracle on the full probabilities, while no tensor or array of N x K entries is ever made (the rows T is
fitted on re-read from a store, in memory or in a temporary file); on two processes as on one."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch.utils._python_dispatch import TorchDispatchMode

from gloo import on_processes
from olsmooth.analysis.calibration import CalibrationAccumulator
from olsmooth.analysis.temperature import fit_temperature, fit_temperature_streamed
from olsmooth.cli import main
from olsmooth.data import build_datasets, dataset_labels, stratified_subset
from olsmooth.engine import predictions, row_store
from olsmooth.engine.inference import (
    evaluate_calibrated,
    evaluate_checkpoints,
    evaluate_each,
    model_from_checkpoint,
)
from olsmooth.errors import UserInputError
from olsmooth.runs.checkpoints import load_checkpoint

N_BINS = 15
KEYS = ("top1", "top5", "nll", "ece", "adaptive_ece", "mce", "classwise_ece", "brier")


# -- the oracle: numpy, from the full (N, K) probabilities -----------------------------------------------------------
def bin_of(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins (b/B, (b+1)/B], the first also holding 0."""
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], values, side="left")


def binned_gap(values: np.ndarray, hits: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
    """Per bin: the sum of (hit - value) over its members."""
    return np.array([(hits[bins == b] - values[bins == b]).sum() for b in range(n_bins)])


def oracle(log_probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict[str, float]:
    """The eight metrics, the plain way: softmax of every row, then each definition over all samples."""
    z = log_probs.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n, k = p.shape
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    top5 = np.argsort(-p, axis=1, kind="stable")[:, :5]
    bins = bin_of(confidence, n_bins)
    gaps = binned_gap(confidence, correct, bins, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    order = np.argsort(confidence, kind="stable")
    equal_mass = np.arange(n) * n_bins // n
    adaptive = binned_gap(confidence[order], correct[order], equal_mass, n_bins)
    onehot = np.eye(k)[labels]
    classwise = sum(np.abs(binned_gap(p[:, c], onehot[:, c], bin_of(p[:, c], n_bins), n_bins)).sum() for c in range(k))
    return {
        "top1": 100 * correct.mean(),
        "top5": 100 * np.mean([labels[i] in top5[i] for i in range(n)]),
        "nll": float(np.mean(-np.log(np.maximum(p[np.arange(n), labels], 1e-12)))),
        "ece": 100 * np.abs(gaps).sum() / n,
        "adaptive_ece": 100 * np.abs(adaptive).sum() / n,
        "mce": 100 * max(abs(g) / c for g, c in zip(gaps, counts) if c),
        "classwise_ece": 100 * classwise / (n * k),
        "brier": float(((p - onehot) ** 2).sum(axis=1).mean()),
    }


def scipy_temperature(log_probs: np.ndarray, labels: np.ndarray) -> float:
    """The NLL-minimising T by scipy's bounded search on log T, the NLL written out in numpy."""
    z = log_probs.astype(np.float64)

    def nll(u: float) -> float:
        s = z / math.exp(u)
        top = s.max(axis=1)
        return float(np.mean(top + np.log(np.exp(s - top[:, None]).sum(axis=1)) - s[np.arange(len(s)), labels]))

    return math.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-9}).x)


def assert_metrics(found: dict, expected: dict, suffix: str = "") -> None:
    """Every metric, or with suffix _ts those scaling changes (not top-1 and top-5), as the oracle's."""
    for key in KEYS if not suffix else KEYS[2:]:
        assert found[key + suffix] == pytest.approx(expected[key], rel=1e-6, abs=1e-7), key + suffix


# -- the accumulator and the streamed fit on random scores -------------------------------------------------------------
def random_case(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 2.5 * torch.randn(n, k, generator=g, dtype=torch.float64)
    labels = torch.where(torch.rand(n, generator=g) < 0.6, logits.argmax(1), torch.randint(0, k, (n,), generator=g))
    return logits, labels


def test_accumulator_over_uneven_batches_in_any_order_equals_the_oracle():
    logits, labels = random_case(300, 40, 0)
    logits[5] = logits[9]  # equal confidences: ranked in dataset order, as the oracle's stable sort does
    expected = oracle(torch.log_softmax(logits, 1).numpy(), labels.numpy())
    acc = CalibrationAccumulator(40)
    positions = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    for chunk in torch.tensor_split(positions, [7, 8, 100, 180]):  # uneven, shuffled, one of a single sample
        acc.update(logits[chunk], labels[chunk], chunk)
    assert_metrics(acc.compute(), expected)
    halves = [CalibrationAccumulator(40) for _ in range(2)]  # as two processes: sums added, rows gathered
    for part, acc_part in zip(torch.tensor_split(positions, 2), halves):
        acc_part.update(logits[part], labels[part], part)
    merged = CalibrationAccumulator.from_parts(halves[0].sums.sum_tensor() + halves[1].sums.sum_tensor(),
                                               torch.cat([h.per_sample() for h in halves]), 40)
    assert_metrics(merged.compute(), expected)


def test_streamed_temperature_equals_the_in_memory_fit_and_scipy():
    logits, labels = random_case(400, 30, 2)
    logits *= 3  # overconfident: T well above 1
    streamed = fit_temperature_streamed(lambda: zip(logits.split(37), labels.split(37)))
    whole = fit_temperature(logits, labels)
    assert streamed.temperature == pytest.approx(whole.temperature, rel=1e-6)
    assert streamed.nll == pytest.approx(whole.nll, rel=1e-12)
    assert streamed.temperature == pytest.approx(scipy_temperature(logits.numpy(), labels.numpy()), rel=1e-5)
    assert streamed.temperature > 1.5
    bad = logits.clone()
    bad[3, 2] = math.nan
    with pytest.raises(UserInputError, match="NaN"):
        fit_temperature_streamed(lambda: zip(bad.split(37), labels.split(37)))


def test_row_store_reads_back_what_it_kept_in_memory_and_from_its_file():
    rows, labels = torch.randn(50, 7), torch.arange(50) % 7
    for budget in (10**9, 0, 4 * 7 * 20):  # all in memory, all on disk, moved to disk after 20 rows
        with row_store.RowStore(7, budget) as store:
            for part in torch.tensor_split(torch.arange(50), [3, 20, 21, 44]):
                store.append(rows[part], labels[part], part + 100)
            assert store.on_disk == (budget < 4 * 7 * 50)
            read = list(store.batches())
            assert [len(r[0]) for r in read] == [3, 17, 1, 23, 6]
            assert torch.equal(torch.cat([r[0] for r in read]), rows)
            assert torch.equal(store.positions(), torch.arange(100, 150)) and torch.equal(store.labels(), labels)
            odd = torch.arange(50) % 2 == 1
            scores, kept, positions = (torch.cat(parts) for parts in zip(*store.batches(odd)))
            assert torch.equal(scores, rows[odd]) and torch.equal(positions, torch.arange(101, 150, 2))
            with store.subset(odd) as subset:
                assert torch.equal(torch.cat([r[0] for r in subset.batches()]), rows[odd])


def test_rows_regrouped_by_position_range_are_every_row_once_in_order():
    """What each process hands the merge onto the main process: one group per range, empty ranges included."""
    positions = torch.tensor([1, 2, 3, 9, 10, 11, 12, 30, 31])  # nothing in [15, 30), a batch across ranges
    rows = torch.arange(9 * 3, dtype=torch.float32).view(9, 3)
    batches = [(rows[part], positions[part] % 7, positions[part]) for part in torch.tensor_split(torch.arange(9),
                                                                                               [2, 3, 7])]
    groups = list(predictions.by_position_range(batches, 35, 5, 3))
    assert [g[2].tolist() for g in groups] == [[1, 2, 3], [9], [10, 11, 12], [], [], [], [30, 31]]
    assert torch.equal(torch.cat([g[0] for g in groups]), rows)
    assert torch.equal(torch.cat([g[1] for g in groups]), positions % 7)
    assert [len(g) for g in predictions.by_position_range([], 10, 4, 3)] == [3, 3, 3]
    assert all(g[0].shape == (0, 3) for g in predictions.by_position_range([], 10, 4, 3))


# -- olsmooth eval on a 1,000-class run --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_1k(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "k1000"
    assert main(["train", "--dataset", "synthetic-1k", "--train-subset", "3000", "--epochs", "2", "--threads", "1",
                 "--save-every", "1", "--out", str(out)]) == 0
    return out


def plain_log_probs(checkpoint: Path) -> np.ndarray:
    """A checkpoint's log-softmax (float64) over the synthetic-1k test set, computed here in one plain pass."""
    test = build_datasets("synthetic-1k").test
    model = model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    images = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():
        return torch.log_softmax(model(images).double(), 1).numpy()


@pytest.fixture(scope="module")
def scores_1k(run_1k) -> tuple[np.ndarray, np.ndarray]:
    """The model's log-softmax over the test set, computed here in one plain pass, and the labels."""
    return plain_log_probs(run_1k / "best.pt"), np.asarray(dataset_labels(build_datasets("synthetic-1k").test))


class LargestScores(TorchDispatchMode):
    """Records the largest number of elements of any tensor with a dimension of `num_classes` (rows of scores)
    that an aten operation returns, factories included."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and self.num_classes in tensor.shape:
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("budget", [None, 0], ids=["rows-in-memory", "rows-in-a-file"])
def test_eval_at_a_thousand_classes_equals_the_oracle_and_never_holds_n_by_k(run_1k, scores_1k, budget,
                                                                            monkeypatch):
    if budget is not None:
        monkeypatch.setattr(row_store, "MEMORY_BUDGET_BYTES", budget)
    log_probs, labels = scores_1k
    n, k = log_probs.shape
    assert (n, k) == (2048, 1000)
    tracemalloc.start()
    with LargestScores(k) as watch:
        result = evaluate_calibrated([run_1k / "best.pt"], batch_size=64)
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # nothing of N x K: the largest tensor of scores is a batch (64 x K), the largest numpy allocation (the
    # store's read buffer, when on disk) a batch too
    assert watch.largest <= 64 * k < n * k / 8, watch.largest
    assert numpy_peak < n * k * 4 / 8, numpy_peak
    metrics = result.metrics
    assert_metrics(metrics, oracle(log_probs, labels))
    held = stratified_subset(labels, round(0.5 * n), 0)
    rest = np.setdiff1d(np.arange(n), held)
    np.testing.assert_array_equal(result.indices_ts.numpy(), rest)
    assert metrics["temperature"] == pytest.approx(scipy_temperature(log_probs[held], labels[held]), rel=1e-5)
    assert_metrics(metrics, oracle(log_probs[rest] / metrics["temperature"], labels[rest]), "_ts")
    assert metrics["samples"] == n and metrics["samples_ts"] == len(rest)
    assert 0 < metrics["top1"] < 100 and metrics["temperature"] != pytest.approx(1.0, abs=0.05)  # not degenerate


def test_eval_fitted_on_a_validation_split_streams_the_test_set_once(tmp_path, monkeypatch):
    out = tmp_path / "val"
    assert main(["train", "--dataset", "synthetic-1k", "--train-subset", "1500", "--epochs", "1", "--threads", "1",
                 "--val-fraction", "0.3", "--out", str(out)]) == 0
    monkeypatch.setattr(row_store, "MEMORY_BUDGET_BYTES", 0)
    with LargestScores(1000) as watch:  # best.pt (the one epoch's weights, as last.pt, without OLS's K x K state)
        result = evaluate_calibrated([out / "best.pt"], batch_size=128, predictions=tmp_path / "p.npz")
    assert watch.largest <= 128 * 1000, watch.largest  # the predictions file too is written a batch at a time
    model = model_from_checkpoint(load_checkpoint(out / "last.pt")).eval()
    val_indices = np.load(out / "val_indices.npy")
    train = build_datasets("synthetic-1k", augment="none").train
    test = build_datasets("synthetic-1k").test
    with torch.no_grad():
        val_scores = torch.log_softmax(model(torch.stack([train[int(i)][0] for i in val_indices])).double(), 1)
        test_scores = torch.log_softmax(model(torch.stack([test[i][0] for i in range(len(test))])).double(), 1)
    val_labels = np.asarray(dataset_labels(train))[val_indices]
    test_labels = np.asarray(dataset_labels(test))
    T = result.metrics["temperature"]
    assert T == pytest.approx(scipy_temperature(val_scores.numpy(), val_labels), rel=1e-5)
    assert_metrics(result.metrics, oracle(test_scores.numpy(), test_labels))
    assert_metrics(result.metrics, oracle(test_scores.numpy() / T, test_labels), "_ts")
    # written on request: the N x K probabilities, before and after scaling, in dataset order
    saved = np.load(tmp_path / "p.npz")
    np.testing.assert_allclose(saved["probs"], test_scores.exp().numpy(), atol=1e-6)
    np.testing.assert_allclose(saved["probs_ts"], torch.softmax(test_scores / T, 1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(saved["labels"], test_labels)
    np.testing.assert_array_equal(saved["indices_ts"], np.arange(len(test_labels)))
    assert saved["probs"].dtype == saved["probs_ts"].dtype == np.float32 and saved["labels"].dtype == np.int64


@pytest.mark.parametrize("budget", [None, 0], ids=["rows-in-memory", "rows-in-a-file"])
def test_ensembles_at_a_thousand_classes_write_and_score_a_batch_at_a_time(run_1k, tmp_path, budget, monkeypatch):
    """`ensemble --save-predictions` and the members of `evaluate_each` never make N x K scores, and their figures
    and file equal the numpy oracle's on the averaged probabilities."""
    if budget is not None:
        monkeypatch.setattr(row_store, "MEMORY_BUDGET_BYTES", budget)
    members = [run_1k / "epoch-001.pt", run_1k / "epoch-002.pt"]
    labels = np.asarray(dataset_labels(build_datasets("synthetic-1k").test))
    probs = np.mean([np.exp(plain_log_probs(path)) for path in members], axis=0)
    n, k = probs.shape
    expected = oracle(np.log(probs), labels)
    tracemalloc.start()
    with LargestScores(k) as watch:
        evaluation = evaluate_checkpoints(members, batch_size=64, predictions=tmp_path / "ens.npz")
        with evaluate_each(members, batch_size=64) as each:
            together = each.ensemble(members).compute()
            alone = each.ensemble(members[1:]).compute()
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert watch.largest <= 2 * 64 * k < n * k / 8, watch.largest  # a batch of each member's scores at most
    assert numpy_peak < 8 * 64 * k * 4 <= n * k * 4 / 4, numpy_peak  # a few batches read back from the stores' files
    assert_metrics({**together, **evaluation.metrics}, expected)
    assert_metrics(alone, oracle(plain_log_probs(members[1]), labels))
    saved = np.load(tmp_path / "ens.npz")
    assert sorted(saved.files) == ["labels", "probs"]
    np.testing.assert_allclose(saved["probs"], probs, atol=1e-6)
    np.testing.assert_array_equal(saved["labels"], labels)


# -- on two processes, as under torchrun ------------------------------------------------------------------------------
def eval_command(argv: list[str], rank: int, world: int) -> dict:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    predictions.GATHER_ELEMENTS = 1000 * 300  # the predictions merged onto rank 0 in 7 ranges of 300 samples
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return {"code": code, "out": out.getvalue()}


def test_eval_on_two_processes_equals_one(run_1k, tmp_path, capsys):
    argv = ["eval", "--checkpoint", str(run_1k / "best.pt"), "--json", "--batch-size", "100", "--save-predictions"]
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "one.npz")]) == 0
    single = json.loads(capsys.readouterr().out)
    ranks = on_processes(functools.partial(eval_command, [*argv, str(tmp_path / "two.npz")]), 2, tmp_path)
    assert [r["code"] for r in ranks] == [0, 0] and ranks[1]["out"] == ""
    double = json.loads(ranks[0]["out"])
    assert double.pop("calibration_data") == single.pop("calibration_data")
    assert double == pytest.approx(single, rel=1e-6)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    for key in ("labels", "indices_ts"):
        np.testing.assert_array_equal(one[key], two[key])
    for key in ("probs", "probs_ts"):
        np.testing.assert_allclose(one[key], two[key], atol=1e-6)
