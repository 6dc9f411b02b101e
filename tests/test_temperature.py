"""Temperature scaling: recovery of a known temperature, scipy's bounded minimiser as an oracle, invariances, the
bracket's ends, bad inputs, and the before/after report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from olsmooth.analysis.calibration import calibration_metrics
from olsmooth.analysis.metrics import SCALED_KEYS
from olsmooth.analysis.temperature import calibration_report, fit_temperature
from olsmooth.errors import UserInputError


def calibrated_by_construction(rows: int, k: int, per_row: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z = log(counts / per_row) repeated per_row times, with labels in exactly those counts: the empirical
    label frequencies of every row equal softmax(z), so T = 1 is the exact NLL minimiser for z."""
    rng = np.random.default_rng(seed)
    logits, labels = [], []
    for _ in range(rows):
        cuts = np.sort(rng.choice(np.arange(1, per_row), size=k - 1, replace=False))
        counts = np.diff(np.concatenate([[0], cuts, [per_row]]))  # k positive counts summing to per_row
        z = np.log(counts / per_row)
        logits += [z] * per_row
        labels += [c for c, n in enumerate(counts) for _ in range(n)]
    return torch.tensor(np.array(logits)), torch.tensor(labels)


@pytest.mark.parametrize("temperature", [2.5, 0.4])
def test_recovers_the_temperature_logits_were_scaled_by(temperature):
    z, labels = calibrated_by_construction(rows=300, k=5, per_row=40, seed=0)
    fit = fit_temperature(z * temperature, labels)
    assert fit.temperature == pytest.approx(temperature, abs=1e-3)
    assert abs(fit.temperature - temperature) < 1e-5  # the search's tolerance, far inside the 1e-3 asked
    assert not fit.at_bound
    assert fit.nll == pytest.approx(float(F.cross_entropy(z, labels)), abs=1e-12)
    assert fit.nll_unscaled == pytest.approx(float(F.cross_entropy(z * temperature, labels)), abs=1e-12)


def test_recovers_the_temperature_of_sampled_labels():
    # labels drawn from softmax(z): T = 2.5 up to sampling noise (its standard error is below 0.02 here)
    g = torch.Generator().manual_seed(1)
    z = 2 * torch.randn(40000, 10, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g)[:, 0]
    assert fit_temperature(2.5 * z, labels).temperature == pytest.approx(2.5, abs=0.08)


def test_agrees_with_scipy_bounded_minimiser():
    g = torch.Generator().manual_seed(2)
    logits = 4 * torch.randn(2000, 7, generator=g, dtype=torch.float64)
    noise = torch.randint(0, 7, (2000,), generator=g)
    labels = torch.where(torch.rand(2000, generator=g) < 0.6, logits.argmax(1), noise)

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    oracle = minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-10})
    fit = fit_temperature(logits, labels)
    assert math.log(fit.temperature) == pytest.approx(oracle.x, abs=1e-5)
    assert fit.nll == pytest.approx(oracle.fun, abs=1e-10)


def test_is_deterministic_and_ignores_a_constant_per_row():
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(500, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (500,), generator=g)
    first = fit_temperature(logits, labels)
    assert fit_temperature(logits, labels) == first
    shifted = fit_temperature(logits + 100 * torch.randn(500, 1, generator=g, dtype=torch.float64), labels)
    assert shifted.temperature == pytest.approx(first.temperature, rel=1e-6)
    as_float32 = fit_temperature(torch.log_softmax(logits, 1).float(), labels)  # log-probabilities work as logits
    assert as_float32.temperature == pytest.approx(first.temperature, rel=1e-4)


def test_separable_data_ends_at_the_lower_bound():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]] * 10)
    fit = fit_temperature(logits, torch.tensor([0, 1] * 10))
    assert fit.at_bound and fit.temperature == pytest.approx(math.exp(-5), rel=1e-5)


@pytest.mark.parametrize("logits, labels, message", [
    (torch.zeros(3), torch.tensor([0, 1, 0]), "shape"),
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "shape"),
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), r"\[0, 2\]"),
    (torch.tensor([[0.0, math.nan], [0.0, 1.0]]), torch.tensor([0, 1]), "NaN"),
])
def test_bad_inputs_raise_user_input_error(logits, labels, message):
    with pytest.raises(UserInputError, match=message):
        fit_temperature(logits, labels)


def test_report_scales_only_what_temperature_changes():
    z, labels = calibrated_by_construction(rows=50, k=4, per_row=20, seed=4)
    overconfident = 3 * z
    fit = fit_temperature(overconfident, labels)
    report = calibration_report(overconfident, labels, fit)
    assert report["temperature"] == fit.temperature
    before = calibration_metrics(overconfident, labels, from_logits=True)
    after = calibration_metrics(overconfident / fit.temperature, labels, from_logits=True)
    for key in SCALED_KEYS:
        assert report[key] == pytest.approx(before[key], abs=1e-9)
        assert report[f"{key}_ts"] == pytest.approx(after[key], abs=1e-6)
    assert report["nll_ts"] < report["nll"] and report["ece_ts"] < report["ece"]
    assert set(calibration_report(overconfident, labels)) == set(before)
