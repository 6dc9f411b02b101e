"""Calibration metrics against hand-worked cases, scikit-learn's log_loss, torchmetrics' calibration error and
slow per-sample loops."""

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
from olsmooth.analysis.calibration import adaptive_ece, calibration_metrics
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


# -- MCE, Brier, classwise and adaptive ECE ------------------------------------------------------------------------
def slow_brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier (1950) for K classes: mean over samples of sum_k (p_ik - [k = y_i])^2."""
    total = 0.0
    for p, y in zip(probs, labels):
        total += sum((p[k] - (1.0 if k == y else 0.0)) ** 2 for k in range(len(p)))
    return total / len(labels)


def slow_classwise_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Kull et al.'s classwise ECE with bins (lo, hi] (0 in the first), one class and one bin at a time, in %."""
    n, k = probs.shape
    total = 0.0
    for c in range(k):
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            members = [i for i in range(n) if lo < probs[i, c] <= hi or (b == 0 and probs[i, c] == 0)]
            if members:
                frequency = np.mean([labels[i] == c for i in members])
                confidence = np.mean([probs[i, c] for i in members])
                total += len(members) / n * abs(frequency - confidence)
    return 100 * total / k


def slow_adaptive_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Equal-mass bins cut at sorted positions ceil(b * N / B), one bin at a time, in %."""
    n = len(labels)
    order = sorted(range(n), key=lambda i: probs[i].max())  # Python's sort is stable
    total = 0.0
    for b in range(n_bins):
        members = order[math.ceil(b * n / n_bins): math.ceil((b + 1) * n / n_bins)]
        if members:
            accuracy = np.mean([probs[i].argmax() == labels[i] for i in members])
            confidence = np.mean([probs[i].max() for i in members])
            total += len(members) * abs(accuracy - confidence)
    return 100 * total / n


def test_hand_worked_mce_brier_classwise_and_adaptive():
    # MCE: the bin gaps are 0.05, 0.85 and 0.21 -> 85 %.
    # Brier: 2 * 0.05^2, 2 * 0.85^2, 2 * 0.30^2, 2 * 0.72^2 -> mean 0.6667.
    # Classwise: every sample alone in its bin for both classes; class 0 gaps 0.05 + 0.85 + 0.30 + 0.72 = 1.92, the
    # same for class 1 -> (1.92 + 1.92) / (4 samples * 2 classes) = 48 %.
    # Adaptive, 15 bins for 4 samples: each sample alone -> 1.92 / 4 = 48 %; 2 bins: {0.70 right, 0.72 wrong} gap
    # 0.21 and {0.85 wrong, 0.95 right} gap 0.40, each of 2 samples -> (0.42 + 0.80) / 4 = 30.5 %.
    metrics = calibration_metrics(HAND_PROBS, HAND_LABELS)
    assert metrics["mce"] == pytest.approx(85.0, abs=1e-9)
    assert metrics["brier"] == pytest.approx(2 * (0.05**2 + 0.85**2 + 0.30**2 + 0.72**2) / 4, abs=1e-12)
    assert metrics["classwise_ece"] == pytest.approx(48.0, abs=1e-9)
    assert metrics["adaptive_ece"] == pytest.approx(48.0, abs=1e-9)
    assert adaptive_ece(HAND_PROBS, HAND_LABELS, n_bins=2) == pytest.approx(30.5, abs=1e-9)
    assert {k: metrics[k] for k in ("top1", "top5", "nll", "ece")} == classification_metrics(HAND_PROBS, HAND_LABELS)


def test_ece_and_mce_match_torchmetrics():
    functional = pytest.importorskip("torchmetrics.functional.classification", reason="torchmetrics (dev extra)")
    cases = [(HAND_PROBS, HAND_LABELS)] + [
        (torch.softmax(logits, 1), labels) for logits, labels in (random_case(500, k, seed=k) for k in (2, 7, 30))]
    for probs, labels in cases:
        k = probs.size(1)
        metrics = calibration_metrics(probs, labels)
        for norm, key in (("l1", "ece"), ("max", "mce")):
            expected = functional.multiclass_calibration_error(probs, labels, num_classes=k, n_bins=15, norm=norm)
            assert metrics[key] == pytest.approx(100 * float(expected), abs=1e-4), (k, key)


@pytest.mark.parametrize("n, k, n_bins", [(300, 7, 15), (97, 3, 10), (10, 12, 15)])
def test_brier_classwise_and_adaptive_match_per_sample_loops(n, k, n_bins):
    logits, labels = random_case(n, k, seed=n + k)
    probs = torch.softmax(logits, 1)
    metrics = calibration_metrics(probs, labels, n_bins=n_bins)
    p, y = probs.numpy(), labels.numpy()
    assert metrics["brier"] == pytest.approx(slow_brier(p, y), abs=1e-12)
    assert metrics["classwise_ece"] == pytest.approx(slow_classwise_ece(p, y, n_bins), abs=1e-9)
    assert metrics["adaptive_ece"] == pytest.approx(slow_adaptive_ece(p, y, n_bins), abs=1e-9)
    assert calibration_metrics(logits, labels, n_bins=n_bins, from_logits=True) == pytest.approx(metrics, abs=1e-9)


def test_adaptive_ece_of_tied_confidences_keeps_sample_order():
    # four samples with one confidence: the stable order puts samples 0, 1 in bin 0 and 2, 3 in bin 1
    probs = torch.tensor([[0.8, 0.2]] * 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    # bin 0: accuracy 1, confidence 0.8 -> 0.2; bin 1: accuracy 0 -> 0.8; (2 * 0.2 + 2 * 0.8) / 4 = 50 %
    assert adaptive_ece(probs, labels, n_bins=2) == pytest.approx(50.0)
    with pytest.raises(UserInputError, match="outside"):
        adaptive_ece(probs, torch.tensor([0, 0, 1, 2]))


def test_classwise_sums_add_across_batches_and_processes():
    logits, labels = random_case(240, 5, seed=11)
    parts = [MetricAccumulator(num_classes=5) for _ in range(3)]
    for acc, chunk, y in zip(parts, logits.split(80), labels.split(80)):
        acc.update(chunk, y)
    reduced = sum(acc.sum_tensor() for acc in parts)
    merged = MetricAccumulator.from_sum_tensor(reduced, num_classes=5)
    expected = calibration_metrics(logits, labels, from_logits=True)
    assert merged.n_bins == 15 and merged.num_classes == 5
    for key, value in {**merged.compute(), **merged.calibration()}.items():
        assert value == pytest.approx(expected[key], abs=1e-9), key
    idle = MetricAccumulator(num_classes=5)  # a process that saw no sample still sends a tensor of the same length
    assert idle.sum_tensor().shape == parts[0].sum_tensor().shape
    with pytest.raises(UserInputError, match="classes"):
        idle.update(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_without_num_classes_there_is_no_classwise_ece():
    acc = MetricAccumulator(from_logits=False)
    acc.update(HAND_PROBS, HAND_LABELS)
    assert set(acc.calibration()) == {"mce", "brier"}
