"""Paired tests by seed, Holm's correction for the comparisons of a table, and the smallest difference n seeds
can resolve.

Every table of paired tests (study pages, `olsmooth report`, the benchmarks) draws its numbers from here, so a
reader can recompute each from the committed per-run data. scipy is imported by the functions that need it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UserInputError

MIN_WILCOXON_PAIRS = 5
"""Below five pairs the signed-rank test is not reported at all."""
WILCOXON_MIN_FOR_005 = 6
"""The exact two-sided signed-rank p of n pairs is at least 2 / 2**n: 0.0625 at n = 5, 0.031 at n = 6."""
ALPHA, POWER = 0.05, 0.8
"""The level and power of the minimum detectable effect."""


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of a and b (same seeds, same order): mean and sample std of a − b, t-test, Wilcoxon when
    n ≥ 5, and the minimum detectable effect (`paired_mde`).

    Constant differences, where scipy returns NaN, get the limits: all zero gives t = 0 and p = 1,
    otherwise t = ±inf and p = 0 for the t-test (Wilcoxon stays defined unless all differences are zero).
    """
    from scipy import stats

    if len(a) != len(b):
        raise UserInputError(f"paired test needs equal-length lists, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise UserInputError(f"paired test needs at least 2 pairs, got {len(a)}")
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    differences = a_values - b_values
    if np.all(differences == differences[0]):
        t_stat = math.copysign(math.inf, differences[0]) if differences[0] else 0.0
        t_pvalue = 0.0 if differences[0] else 1.0
    else:
        result = stats.ttest_rel(a_values, b_values)
        t_stat, t_pvalue = float(result.statistic), float(result.pvalue)
    wilcoxon_pvalue = None
    if len(differences) >= MIN_WILCOXON_PAIRS:
        wilcoxon_pvalue = float(stats.wilcoxon(differences).pvalue) if differences.any() else 1.0
    sd = float(differences.std(ddof=1))
    return {
        "n": len(differences),
        "mean_diff": float(differences.mean()),
        "sd_diff": sd,
        "mde": paired_mde(sd, len(differences)),
        "t_stat": t_stat,
        "t_pvalue": t_pvalue,
        "wilcoxon_pvalue": wilcoxon_pvalue,
    }


def paired_mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at level `alpha` detects with probability
    `power`, for n pairs whose differences have standard deviation `sd` (taken as known: the sample's); 0 when
    sd is 0. Exact: the power of the noncentral t, both tails counted (`t_test_power`)."""
    if n < 2:
        raise UserInputError(f"a minimum detectable effect needs at least 2 pairs, got {n}")
    if sd == 0:
        return 0.0
    return float(detectable_noncentrality(n - 1, alpha, power) * sd / math.sqrt(n))


@functools.cache
def detectable_noncentrality(df: int, alpha: float, power: float) -> float:
    """The noncentrality at which the two-sided t-test with `df` degrees of freedom reaches `power`; it depends on
    the pair count only, so a table of many comparisons solves it once per count."""
    from scipy import optimize, stats

    critical = float(stats.t.ppf(1 - alpha / 2, df))
    upper = 1.0
    while t_test_power(upper, df, critical) < power:
        upper *= 2
    return float(optimize.brentq(lambda nc: t_test_power(nc, df, critical) - power, 0.0, upper, xtol=1e-10))


def t_test_power(noncentrality: float, df: int, critical: float) -> float:
    """P(|T| > critical) for T = (Z + noncentrality) / sqrt(V / df), Z standard normal, V chi-squared with df
    degrees of freedom: |T| > c exactly when V < df ((Z + noncentrality) / c)^2, integrated over Z. scipy's
    noncentral t returns NaN for some arguments, and integrating over V instead stalls at a few hundred df."""
    from scipy import integrate, stats

    def given(z: float) -> float:
        return float(stats.norm.pdf(z) * stats.chi2.cdf(df * ((z + noncentrality) / critical) ** 2, df))

    kink = [-noncentrality] if noncentrality < 12 else None
    return float(integrate.quad(given, -12.0, 12.0, points=kink, limit=200)[0])


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: sorted ascending, the i-th smallest (from 0) is
    multiplied by m − i, then made non-decreasing and capped at 1. Controls the family-wise error rate."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * float(pvalues[index])))
        adjusted[index] = running
    return adjusted
