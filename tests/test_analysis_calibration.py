"""Calibration metrics against hand-worked cases, scikit-learn's log_loss and slow per-sample loops."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss

from olsmooth.analysis import MetricAccumulator, classification_metrics, reliability_bins
from olsmooth.errors import UserInputError

# Four samples, two classes. Confidences 0.95, 0.85, 0.70, 0.72 fall in 15-bin bins 14, 12, 10, 10.
HAND_PROBS = torch.tensor([[0.95, 0.05], [0.15, 0.85], [0.30, 0.70], [0.72, 0.28]], dtype=torch.float64)
HAND_LABELS = torch.tensor([0, 0, 1, 1])


def random_case(n: int, k: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Peaked random logits and labels that agree with the argmax about half the time."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, k, generator=g, dtype=dtype)
    labels = torch.where(torch.rand(n, generator=g) < 0.5, logits.argmax(1), torch.randint(0, k, (n,), generator=g))
    return logits, labels


def slow_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Guo et al.'s ECE with bins (lo, hi], one sample at a time, in %."""
    gap = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(labels)) if lo < probs[i].max() <= hi]
        if members:
            accuracy = np.mean([probs[i].argmax() == labels[i] for i in members])
            confidence = np.mean([probs[i].max() for i in members])
            gap += len(members) * abs(accuracy - confidence)
    return 100 * gap / len(labels)


def test_hand_worked_case():
    # bin 14: {0.95 correct} -> gap 0.05; bin 12: {0.85 wrong} -> gap 0.85;
    # bin 10: {0.70 correct, 0.72 wrong} -> accuracy 0.5, confidence 0.71, gap 0.21 weighted by 2.
    # ECE = (0.05 + 0.85 + 2 * 0.21) / 4 = 0.33 -> 33 %.
    metrics = classification_metrics(HAND_PROBS, HAND_LABELS)
    assert metrics["ece"] == pytest.approx(33.0, abs=1e-9)
    assert metrics["top1"] == 50.0
    assert metrics["top5"] == 100.0
    assert metrics["nll"] == pytest.approx(-(math.log(0.95) + math.log(0.15) + math.log(0.70) + math.log(0.28)) / 4)
    assert all(type(v) is float for v in metrics.values())


def test_hand_worked_bins():
    bins = reliability_bins(HAND_PROBS, HAND_LABELS)
    assert bins["count"].tolist() == [0] * 10 + [2, 0, 1, 0, 1]
    assert bins["accuracy"][[10, 12, 14]].tolist() == [0.5, 0.0, 1.0]
    np.testing.assert_allclose(bins["confidence"][[10, 12, 14]], [0.71, 0.85, 0.95])
    assert np.isnan(bins["accuracy"][0]) and np.isnan(bins["confidence"][11])
    np.testing.assert_allclose(bins["edges"], np.arange(16) / 15)


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_per_sample_loop(n_bins):
    logits, labels = random_case(300, 7, seed=n_bins)
    probs = torch.softmax(logits, 1)
    expected = slow_ece(probs.numpy(), labels.numpy(), n_bins)
    assert classification_metrics(probs, labels, n_bins=n_bins)["ece"] == pytest.approx(expected, abs=1e-9)


def test_nll_matches_sklearn_log_loss():
    logits, labels = random_case(500, 10, seed=1)
    probs = torch.softmax(logits, 1)
    expected = log_loss(labels.numpy(), probs.numpy(), labels=list(range(10)))
    assert classification_metrics(probs, labels)["nll"] == pytest.approx(expected, rel=1e-10)


def test_nll_clamps_zero_probability():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    assert classification_metrics(probs, torch.tensor([1, 0]))["nll"] == pytest.approx(
        (-math.log(1e-12) - math.log(0.5)) / 2)


def test_top_k_matches_per_sample_loop():
    logits, labels = random_case(400, 20, seed=2)
    probs = torch.softmax(logits, 1)
    top1 = top5 = 0
    for p, y in zip(probs.tolist(), labels.tolist()):
        ranking = sorted(range(20), key=lambda c: -p[c])
        top1 += ranking[0] == y
        top5 += y in ranking[:5]
    metrics = classification_metrics(probs, labels)
    assert metrics["top1"] == pytest.approx(100 * top1 / 400)
    assert metrics["top5"] == pytest.approx(100 * top5 / 400)


def test_fewer_than_five_classes_gives_top5_100():
    logits, labels = random_case(50, 3, seed=3)
    assert classification_metrics(torch.softmax(logits, 1), labels)["top5"] == 100.0


def test_float32_agrees_with_float64():
    logits, labels = random_case(300, 10, seed=4)
    m64 = classification_metrics(torch.softmax(logits, 1), labels)
    m32 = classification_metrics(torch.softmax(logits.float(), 1), labels)
    for key in m64:
        assert m32[key] == pytest.approx(m64[key], abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(0, 200), max_size=6), seed=st.integers(0, 1000))
def test_accumulator_over_batches_equals_one_shot(cuts, seed):
    logits, labels = random_case(200, 8, seed)
    probs = torch.softmax(logits, 1)
    acc = MetricAccumulator(from_logits=False)
    bounds = [0, *sorted(cuts), 200]
    for lo, hi in zip(bounds, bounds[1:]):
        acc.update(probs[lo:hi], labels[lo:hi])
    one_shot = classification_metrics(probs, labels)
    assert acc.num_samples == 200
    for key, value in acc.compute().items():
        assert value == pytest.approx(one_shot[key], abs=1e-9)


def test_accumulator_from_logits_equals_metrics_of_softmax():
    logits, labels = random_case(256, 12, seed=5)
    acc = MetricAccumulator()
    for chunk, y in zip(logits.split(100), labels.split(100)):
        acc.update(chunk, y)
    expected = classification_metrics(torch.softmax(logits, 1), labels)
    for key, value in acc.compute().items():
        assert value == pytest.approx(expected[key], abs=1e-9)


def test_sum_tensor_round_trip_adds_like_all_reduce():
    logits, labels = random_case(300, 6, seed=6)
    first, second, both = MetricAccumulator(n_bins=10), MetricAccumulator(n_bins=10), MetricAccumulator(n_bins=10)
    first.update(logits[:120], labels[:120])
    second.update(logits[120:], labels[120:])
    both.update(logits, labels)
    reduced = first.sum_tensor() + second.sum_tensor()
    assert reduced.dtype == torch.float64 and reduced.dim() == 1
    merged = MetricAccumulator.from_sum_tensor(reduced)
    assert merged.n_bins == 10
    for key, value in merged.compute().items():
        assert value == pytest.approx(both.compute()[key], abs=1e-12)


def test_reset_forgets_samples():
    acc = MetricAccumulator(from_logits=False)
    acc.update(HAND_PROBS, HAND_LABELS)
    acc.reset()
    acc.update(HAND_PROBS[:1], HAND_LABELS[:1])
    assert acc.num_samples == 1 and acc.compute()["top1"] == 100.0


@pytest.mark.parametrize("probs, labels, message", [
    (HAND_PROBS, torch.tensor([0, 2, 1, 1]), "outside"),
    (HAND_PROBS, torch.tensor([0, -1, 1, 1]), "outside"),
    (torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]), torch.tensor([0, 1]), "NaN"),
    (torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.tensor([0, 1]), "not probabilities"),
    (torch.tensor([[3.0, 1.0], [0.5, 0.5]]), torch.tensor([0, 1]), "not probabilities"),
    (HAND_PROBS, torch.tensor([0, 1, 1]), "labels must have shape"),
    (HAND_PROBS, HAND_LABELS.double(), "integer"),
    (HAND_PROBS[0], HAND_LABELS[:1], "shape"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "no samples"),
])
def test_invalid_inputs_raise_user_input_error(probs, labels, message):
    with pytest.raises(UserInputError, match=message):
        classification_metrics(probs, labels)


def test_accumulator_rejects_class_count_change_and_bad_sum_tensor():
    acc = MetricAccumulator()
    acc.update(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(UserInputError, match="classes"):
        acc.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(UserInputError, match="sum tensor"):
        MetricAccumulator.from_sum_tensor(torch.zeros(8, dtype=torch.float64))
    with pytest.raises(UserInputError, match="n_bins"):
        MetricAccumulator(n_bins=0)


def test_import_does_not_load_matplotlib_or_scipy():
    code = "import sys, olsmooth.analysis; print('matplotlib' in sys.modules, 'scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
