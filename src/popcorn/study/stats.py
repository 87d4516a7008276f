"""The statistics a study report uses: bootstrap confidence intervals of a mean, and a paired
sign-flip permutation test with Cohen's d_z for PE against basic on the same queries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float
    low: float
    high: float


def bootstrap_mean(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> MeanCI:
    """The mean and its 95% percentile-bootstrap interval (a single value has none)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return MeanCI(0, float("nan"), float("nan"), float("nan"))
    mean = float(values.mean())
    if len(values) == 1:
        return MeanCI(1, mean, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return MeanCI(len(values), mean, float(low), float(high))


@dataclass(frozen=True)
class Paired:
    n: int
    mean_difference: float
    effect_size: float
    """Cohen's d_z: the mean difference over the differences' standard deviation."""
    p_value: float
    """Two-sided, from a sign-flip permutation test (exact below 16 pairs)."""


def paired_test(a: np.ndarray, b: np.ndarray, permutations: int = 10_000, seed: int = 0) -> Paired:
    """Is ``a`` (e.g. PE) different from ``b`` (basic) on the same items?"""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n == 0:
        return Paired(0, float("nan"), float("nan"), float("nan"))
    observed = abs(d.mean())
    sd = d.std(ddof=1) if n > 1 else 0.0
    dz = float(d.mean() / sd) if sd > 0 else float("nan")
    if n < 16:  # every sign pattern
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(permutations, n))
    null = np.abs((signs * d).mean(axis=1))
    p = float((np.sum(null >= observed - 1e-12)) / len(null))
    return Paired(n, float(d.mean()), dz, p)
