"""Holm's correction by hand, the minimum detectable effect against a simulation, and the paired-test caption."""

import math

import numpy as np
import pytest
from scipy import stats

from olsmooth.analysis import holm, paired_mde
from olsmooth.analysis.report import paired_caption


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, and never below a smaller p's adjusted value
    assert holm([0.2]) == [0.2] and holm([]) == []


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mde_has_the_stated_power_in_a_simulation(n):
    """Paired differences drawn with mean = the MDE and sd 1.3: the t-test rejects at 0.05 in 80% of draws."""
    effect = paired_mde(1.3, n)
    rng = np.random.default_rng(n)
    d = rng.normal(effect, 1.3, size=(200_000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    power = float((np.abs(t) > stats.t.ppf(0.975, n - 1)).mean())
    assert power == pytest.approx(0.8, abs=0.004)


def test_mde_limits():
    assert paired_mde(0.0, 5) == 0.0
    # many pairs: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n)
    assert paired_mde(2.0, 400) == pytest.approx((1.959964 + 0.841621) * 2.0 / 20, rel=0.005)
    assert paired_mde(2.0, 5) == pytest.approx(2 * paired_mde(1.0, 5))


def test_caption_says_what_the_seeds_allow():
    rows = [{"n": "5", "metric": m} for m in ("top1", "top1", "nll", "nll")]
    text = paired_caption(rows)
    assert "Holm's method for the 2 comparisons of each metric" in text
    assert "cannot go below 0.0625, so it cannot reach 0.05" in text
    assert "cannot reach" not in paired_caption([{"n": "6", "metric": "top1"}])
    assert "not computed below 5 pairs" in paired_caption([{"n": "3", "metric": "top1"}])
