"""The statistics a study report uses: BCa bootstrap confidence intervals of a mean, a
paired sign-flip permutation test with Cohen's d_z for PE against basic on the same queries,
and Holm's correction of a family of such tests' p-values.

Both come from ``scipy.stats`` (``bootstrap`` with the BCa method, ``permutation_test`` over
signs): its permutation p-value counts the observed assignment among the resamples, so a
sampled p is never 0, and it enumerates every sign pattern exactly when that is cheaper than
the resamples asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    low: float
    high: float


def bootstrap_mean(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> MeanCI:
    """The mean and its 95% BCa bootstrap interval (a single value has none)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return MeanCI(0, float("nan"), float("nan"), float("nan"))
    mean = float(values.mean())
    if len(values) == 1:
        return MeanCI(1, mean, float("nan"), float("nan"))
    if np.ptp(values) == 0:  # every value the same: BCa is undefined, the interval a point
        return MeanCI(len(values), mean, mean, mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's degenerate-distribution warning: handled above
        found = stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=0.95,
            n_resamples=resamples,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = found.confidence_interval
    return MeanCI(len(values), mean, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    n: int
    mean_difference: float
    effect_size: float
    """Cohen's d_z: the mean difference over the differences' standard deviation."""
    p_value: float
    """Two-sided, from a sign-flip permutation test (exact when 2^n <= the resamples)."""


def paired_test(a: np.ndarray, b: np.ndarray, permutations: int = 10_000, seed: int = 0) -> Paired:
    """Is ``a`` (e.g. PE) different from ``b`` (basic) on the same items?"""
    from scipy import stats

    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n == 0:
        return Paired(0, float("nan"), float("nan"), float("nan"))
    sd = d.std(ddof=1) if n > 1 else 0.0
    dz = float(d.mean() / sd) if sd > 0 else float("nan")
    if not np.any(d):
        return Paired(n, 0.0, dz, 1.0)
    found = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",  # one sample: flip the sign of each difference
        n_resamples=permutations,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return Paired(n, float(d.mean()), dz, float(found.pvalue))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (one family of tests), in their order: the
    i-th smallest is multiplied by (m - i + 1), kept from falling below a smaller one's, and
    capped at 1. NaN (a test that could not run) stays NaN and does not count in m."""
    ps = np.asarray(p_values, np.float64)
    adjusted = np.full(len(ps), np.nan)
    ran = np.flatnonzero(~np.isnan(ps))
    m = len(ran)
    running = 0.0
    for rank, i in enumerate(ran[np.argsort(ps[ran], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(ps[i])))
        adjusted[i] = running
    return [float(p) for p in adjusted]
