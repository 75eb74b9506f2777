"""The censored likelihood equals the brute-force sum of probabilities over the interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from gapmodel.likelihood import MAX_WIDTH, interval_logp


def brute_force(lo, hi, n, p, concentration=None):
    out = []
    for a, b, size, prob in zip(lo, hi, n, p, strict=True):
        ks = np.arange(a, b + 1)
        if concentration is None:
            pmf = stats.binom.pmf(ks, int(size), prob)
        else:
            pmf = stats.betabinom.pmf(ks, int(size), prob * concentration,
                                      (1 - prob) * concentration)
        out.append(np.log(pmf.sum()))
    return np.array(out)


@pytest.mark.parametrize("concentration", [None, 3.0, 50.0])
def test_interval_logp_matches_sum_of_pmf(concentration):
    rng = np.random.default_rng(7)
    n = rng.integers(1, 400, size=60).astype(float)
    lo = (rng.random(60) * n * 0.5).astype(int)
    width = rng.choice([0, 1, 4, 6, 30], size=60)
    hi = np.minimum(lo + width, n.astype(int))
    p = rng.uniform(0.01, 0.9, size=60)
    got = interval_logp(lo, hi, n, p, concentration).eval()
    np.testing.assert_allclose(got, brute_force(lo, hi, n, p, concentration), rtol=1e-9,
                               atol=1e-9)


def test_exact_counts_are_the_pmf():
    lo = np.array([0, 3, 17])
    n, p = np.array([5.0, 10.0, 40.0]), np.array([0.2, 0.3, 0.5])
    got = interval_logp(lo, lo, n, p).eval()
    np.testing.assert_allclose(got, stats.binom.logpmf(lo, n.astype(int), p), rtol=1e-10)


def test_suppressed_interval_is_the_probability_of_one_to_seven():
    got = interval_logp(np.array([1]), np.array([7]), np.array([50.0]), np.array([0.05])).eval()
    expected = stats.binom.cdf(7, 50, 0.05) - stats.binom.cdf(0, 50, 0.05)
    np.testing.assert_allclose(np.exp(got), [expected], rtol=1e-10)


def test_too_wide_intervals_are_refused():
    with pytest.raises(ValueError, match="spans"):
        interval_logp(np.array([0]), np.array([MAX_WIDTH + 5]), np.array([1e6]),
                      np.array([0.1]))
