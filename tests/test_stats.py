"""The report's statistics: never a p-value of 0, exact where cheap, BCa intervals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from popcorn.study.stats import bootstrap_mean, paired_test


def exact_sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p by enumerating every sign pattern (independent of scipy)."""
    observed = abs(d.mean())
    hits = total = 0
    for signs in itertools.product((1.0, -1.0), repeat=len(d)):
        total += 1
        hits += abs((np.array(signs) * d).mean()) >= observed - 1e-12
    return hits / total


@pytest.mark.parametrize("n", [2, 5, 9, 12])
def test_small_samples_are_exact(n: int):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.3, 1, n), rng.normal(0, 1, n)
    assert paired_test(a, b).p_value == pytest.approx(exact_sign_flip_p(a - b))


@pytest.mark.parametrize("n", [20, 50, 200])
def test_a_sampled_p_value_is_never_zero(n: int):
    rng = np.random.default_rng(n)
    a = rng.normal(5, 0.1, n)  # a huge effect: no resample reaches it
    found = paired_test(a, np.zeros(n), permutations=999)
    assert 0 < found.p_value <= 2 / 1000
    assert found.effect_size > 10


def test_no_difference_is_p_one():
    same = np.arange(5.0)
    assert paired_test(same, same).p_value == 1.0


@pytest.mark.parametrize("n", [5, 30, 300])
def test_bca_interval_holds_the_mean(n: int):
    values = np.random.default_rng(n).exponential(1.0, n)  # skewed, where BCa matters
    ci = bootstrap_mean(values)
    assert ci.low < ci.mean < ci.high


def test_bca_interval_narrows_with_more_data():
    values = np.random.default_rng(7).exponential(1.0, 400)
    few, many = bootstrap_mean(values[:40]), bootstrap_mean(values)
    assert (many.high - many.low) < (few.high - few.low) / 2


def test_degenerate_samples():
    assert np.isnan(bootstrap_mean(np.array([1.0])).low)
    same = bootstrap_mean(np.full(4, 2.5))
    assert same.low == same.high == same.mean == 2.5
