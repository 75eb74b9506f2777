"""The Laplace-collapsed area effect against numerical integration."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from scipy import integrate, optimize, stats

from gapmodel.model import laplace_collapse

N = np.array([2000.0, 40000.0, 51.0, 300.0])
R = np.array([700.0, 26000.0, 0.0, 12.0])
P = np.array([0.5, 0.9, 0.3, 0.2])  # true prevalence x other detection terms
MEAN, SIGMA = np.array([0.3, 0.8, 0.5, -0.2]), 0.4


def loglik_numpy(u: float, i: int) -> float:
    p = P[i] / (1 + np.exp(-u))
    return stats.binom.logpmf(R[i], N[i], p)


def laplace_terms(modes: np.ndarray) -> np.ndarray:
    """Per-area Laplace log marginal, from the modes (numpy, central differences)."""
    out = []
    for i, x in enumerate(modes):
        def log_post(v, i=i):
            return loglik_numpy(v, i) + stats.norm.logpdf(v, MEAN[i], SIGMA)

        h = 1e-4
        curvature = (log_post(x + h) - 2 * log_post(x) + log_post(x - h)) / h**2
        out.append(log_post(x) + 0.5 * np.log(2 * np.pi / -curvature))
    return np.array(out)


def test_modes_and_marginals_match_quadrature():
    def loglik(u):
        p = P * pm.math.sigmoid(u)
        return pt.sum(R * pt.log(p) + (N - R) * pt.log1p(-p)
                      + pt.gammaln(N + 1) - pt.gammaln(R + 1) - pt.gammaln(N - R + 1))

    with pm.Model(coords={"area": list("abcd")}) as model:
        start = pt.as_tensor(np.log(R / N / P + 1e-9) - np.log1p(-R / N / P + 1e-9))
        u = laplace_collapse(loglik, pt.as_tensor(MEAN), SIGMA, start)
    f = pytensor.function([], [u, model["register"]])
    modes, total = f()
    exact = np.zeros(len(N))
    for i in range(len(N)):
        def log_post(x, i=i):
            return loglik_numpy(x, i) + stats.norm.logpdf(x, MEAN[i], SIGMA)

        best = optimize.minimize_scalar(lambda x, i=i: -log_post(x, i), bounds=(-10, 10),
                                        method="bounded", options={"xatol": 1e-10})
        assert abs(modes[i] - best.x) < 1e-5
        peak = -best.fun
        area, _ = integrate.quad(lambda x, i=i, peak=peak: np.exp(log_post(x, i) - peak),
                                 -10, 10, points=[best.x], limit=200)
        exact[i] = peak + np.log(area)
    approx = laplace_terms(modes)
    assert abs(total - approx.sum()) < 1e-4  # the potential is the Laplace formula
    error = np.abs(approx - exact)
    # the Laplace error of a log marginal is O(1/n): about 3e-5 for a 40,000-person area
    # (the use case), 6e-3 for a 51-person area with a zero count
    assert (error * N < 10).all(), error
    assert error[1] < 1e-4, error


def test_a_midpoint_search_keeps_the_interval_likelihoods_marginal():
    """Censored counts: Newton steps on the midpoint likelihood, the last on the interval
    likelihood itself, add little to the Laplace error of the interval likelihood's
    marginal (against quadrature), area by area."""
    from gapmodel.likelihood import binomial_logpmf, interval_logp

    lo = np.array([680, 25_900, 0, 8])
    hi = np.array([719, 26_100, 7, 16])  # rounded, a wide interval, suppressed 0-7, ...

    def laplace(i: int, search: bool) -> float:
        n, p, k = N[i:i + 1], P[i:i + 1], (lo[i:i + 1] + hi[i:i + 1]) / 2.0

        def loglik(u):
            return pt.sum(interval_logp(lo[i:i + 1], hi[i:i + 1], n, p * pm.math.sigmoid(u)))

        def midpoint(u):
            return pt.sum(binomial_logpmf(k, n, p * pm.math.sigmoid(u)))

        rate = np.clip(k / n / p, 1e-3, 1 - 1e-3)
        with pm.Model(coords={"area": ["a"]}) as model:
            laplace_collapse(loglik, pt.as_tensor(MEAN[i:i + 1]), SIGMA,
                             pt.as_tensor(np.log(rate) - np.log1p(-rate)),
                             search=midpoint if search else None)
        return float(pytensor.function([], model["register"])())

    for i in range(len(N)):
        def log_post(x, i=i):
            p = P[i] / (1 + np.exp(-x))
            pmf = stats.binom.logpmf(np.arange(lo[i], hi[i] + 1), N[i], p)
            return np.logaddexp.reduce(pmf) + stats.norm.logpdf(x, MEAN[i], SIGMA)

        best = optimize.minimize_scalar(lambda x, i=i: -log_post(x, i), bounds=(-10, 10),
                                        method="bounded", options={"xatol": 1e-10})
        area, _ = integrate.quad(lambda x, i=i, top=-best.fun: np.exp(log_post(x, i) - top),
                                 -10, 10, points=[best.x], limit=200)
        exact = -best.fun + np.log(area)
        full, searched = laplace(i, search=False), laplace(i, search=True)
        assert abs(full - exact) < 0.03  # the Laplace error itself
        assert abs(searched - full) < 0.1 * abs(full - exact), (i, searched, full, exact)
