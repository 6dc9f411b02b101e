"""Paired tests by seed, Holm's correction for the comparisons of a table, and the smallest difference n seeds
can resolve.

Every table of paired tests (study pages, `olsmooth report`, the benchmarks) draws its numbers from here, so a
reader can recompute each from the committed per-run data. scipy is imported by the functions that need it.
"""

from __future__ import annotations

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
    from scipy import optimize, stats

    if n < 2:
        raise UserInputError(f"a minimum detectable effect needs at least 2 pairs, got {n}")
    if sd == 0:
        return 0.0
    df = n - 1
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    upper = 1.0
    while t_test_power(upper, df, critical) < power:
        upper *= 2
    noncentrality = optimize.brentq(lambda nc: t_test_power(nc, df, critical) - power, 0.0, upper, xtol=1e-10)
    return float(noncentrality * sd / math.sqrt(n))


def t_test_power(noncentrality: float, df: int, critical: float) -> float:
    """P(|T| > critical) for T = (Z + noncentrality) / sqrt(V / df), Z standard normal, V chi-squared with df
    degrees of freedom: integrated over V, where scipy's noncentral t returns NaN for some arguments."""
    from scipy import integrate, stats

    def given(v: float) -> float:
        bound = critical * math.sqrt(v / df)
        tails = stats.norm.sf(bound - noncentrality) + stats.norm.cdf(-bound - noncentrality)
        return float(tails * stats.chi2.pdf(v, df))

    return float(integrate.quad(given, 0.0, math.inf, limit=200)[0])


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: sorted ascending, the i-th smallest (from 0) is
    multiplied by m − i, then made non-decreasing and capped at 1. Controls the family-wise error rate."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * float(pvalues[index])))
        adjusted[index] = running
    return adjusted
