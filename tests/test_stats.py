"""The report's statistics: never a p-value of 0, exact where cheap, BCa intervals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from popcorn.study.report import _pe_vs_basic
from popcorn.study.stats import bootstrap_mean, holm, paired_test


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


def test_holm_multiplies_the_smallest_p_by_the_number_of_tests_and_keeps_the_order():
    # Sorted: 0.01 * 3, 0.03 * 2, then 0.04 * 1 raised to the 0.06 before it; NaN is no test.
    assert holm([0.01, 0.04, 0.03, float("nan")]) == pytest.approx(
        [0.03, 0.06, 0.06, np.nan], nan_ok=True
    )
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02]  # one test: nothing to correct


def clip(query: str, mode: str, video: str, score: float, llm: str = "m") -> dict[str, object]:
    return {"query_set": "q", "query": query, "llm": llm, "mode": mode, "video": video,
            "seed": 42, "score": score}  # fmt: skip


def test_pe_and_basic_pair_once_per_query_however_many_generators_render_it():
    """Two clip generators render each script; pairing clip by clip counted each script pair
    twice (n 6 for 3 queries) and made the p-value too small."""
    clips = []
    for i, query in enumerate(["a", "b", "c"]):
        for video, offset in (("v1", 0.0), ("v2", 10.0)):
            clips.append(clip(query, "basic", video, offset + i))
            clips.append(clip(query, "pe:3", video, offset + i + 1.0 + 0.5 * (video == "v2")))
    clips.append(clip("d", "basic", "v1", 5.0))  # PE gave no script for query d
    (row,) = _pe_vs_basic(clips)
    llm, mode, n, dropped, mean, _dz, p, p_holm = row
    assert (llm, mode, n, dropped) == ("m", "pe:3", 3, 1)
    assert mean == "1.250"  # per query: mean of v1's +1.0 and v2's +1.5
    assert float(p) == pytest.approx(0.25)  # all 8 sign patterns of 3 queries, 2 as extreme
    assert p_holm == p  # one LLM x N test: nothing to correct


def test_every_llm_and_pe_mode_is_one_test_of_the_holm_family():
    clips = [
        clip(q, mode, "v1", s + bump, llm)
        for llm in ("m1", "m2")
        for q, s in zip("abcdef", [1.0, 2.0, 0.5, 3.0, 1.5, 2.5], strict=True)
        for mode, bump in (("basic", 0.0), ("pe:3", 1.0 + 0.1 * ord(q)), ("pe:10", -0.2))
    ]
    rows = _pe_vs_basic(clips)
    assert [(r[0], r[1]) for r in rows] == [
        ("m1", "pe:10"), ("m1", "pe:3"), ("m2", "pe:10"), ("m2", "pe:3")
    ]  # fmt: skip
    # Six queries all one way: 2 of the 64 sign patterns are as extreme, p = 1/32 per test;
    # four tests, so Holm multiplies the smallest by 4 and the rest keep that level.
    assert [r[6] for r in rows] == ["0.031"] * 4
    assert [r[7] for r in rows] == ["0.125"] * 4
