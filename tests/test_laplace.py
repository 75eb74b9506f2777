"""The Laplace-collapsed area effect against numerical integration."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
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


def _binomial_loglik(u):
    p = P * pm.math.sigmoid(u)
    return pt.sum(R * pt.log(p) + (N - R) * pt.log1p(-p)
                  + pt.gammaln(N + 1) - pt.gammaln(R + 1) - pt.gammaln(N - R + 1))


def _modes(steps: int, informed: bool) -> np.ndarray:
    """The modes after `steps` Newton steps from each area's root (its count's own
    maximum), with or without the likelihood's information there."""
    rate = np.clip(R / N / P, 1e-9, 1 - 1e-9)
    root = np.log(rate) - np.log1p(-rate)
    information = N * (P * rate * (1 - rate)) ** 2 / (P * rate * (1 - P * rate))
    with pm.Model(coords={"area": list("abcd")}):
        u = laplace_collapse(_binomial_loglik, pt.as_tensor(MEAN), SIGMA, pt.as_tensor(root),
                             steps=steps, information=information if informed else None)
    return pytensor.function([], u)()


def test_a_start_weighed_against_the_prior_reaches_every_mode_in_three_steps():
    """The 51-person area with no one on its list has its root far out (a logit of -21);
    from there steps of at most 1 need four to reach the prior's side. Weighed by the
    likelihood's information at the root, its start is the prior's mean, and three steps
    reach every area's mode."""
    exact = _modes(20, informed=False)
    assert np.abs(_modes(3, informed=True) - exact).max() < 1e-6
    assert np.abs(_modes(3, informed=False) - exact)[2] > 0.1  # the far root, uninformed


def test_laplace_error_is_how_far_the_density_is_from_converged():
    """The `laplace_error` deterministic, how much one Newton step more would move the
    Laplace log density, is its distance from the converged value: within 5% where the
    steps stop short (by 0.36 down to 1e-6), and nothing where they converged."""

    def potential_and_error(steps: int, informed: bool) -> tuple[float, float]:
        rate = np.clip(R / N / P, 1e-9, 1 - 1e-9)
        information = N * (P * rate * (1 - rate)) ** 2 / (P * rate * (1 - P * rate))
        with pm.Model(coords={"area": list("abcd")}) as model:
            laplace_collapse(_binomial_loglik, pt.as_tensor(MEAN), SIGMA,
                             pt.as_tensor(np.log(rate) - np.log1p(-rate)), steps=steps,
                             information=information if informed else None)
        return pytensor.function([], [model["register"], model["laplace_error"]])()

    converged, _ = potential_and_error(20, informed=False)
    for steps, informed in [(1, True), (2, True), (3, False), (4, False), (8, True)]:
        potential, error = potential_and_error(steps, informed)
        assert error == pytest.approx(abs(potential - converged), rel=0.05, abs=1e-12), \
            (steps, informed)


def test_the_gate_fails_modes_short_of_converged():
    """A fit whose Laplace modes stopped short at some draw fails the gate, naming the
    setting to raise; converged modes pass, and a fit without the collapse has no check."""
    import xarray as xr

    from gapmodel.fit import LAPLACE_ERROR_TOLERANCE, diagnose
    from gapmodel.spec import ModelSpec

    spec = ModelSpec.from_yaml("models/hypertension_england_pcn.yaml")
    rng = np.random.default_rng(0)
    shape = (2, 1000)

    def verdict(steps: np.ndarray | None) -> dict:
        posterior = {"gamma0": (("chain", "draw"), rng.normal(0, 1, shape))}
        if steps is not None:
            posterior["laplace_error"] = (("chain", "draw"), steps)
        stats = {"diverging": (("chain", "draw"), np.zeros(shape, bool)),
                 "energy": (("chain", "draw"), rng.normal(0, 1, shape))}
        idata = xr.DataTree.from_dict({"posterior": xr.Dataset(posterior),
                                       "sample_stats": xr.Dataset(stats)})
        return diagnose(idata, rng.normal(100, 5, shape), spec)[1]

    converged = verdict(np.full(shape, 1e-12))
    assert converged["passed"], converged["failures"]
    assert converged["checks"]["laplace_error"] == 1e-12
    short = np.full(shape, 1e-12)
    short[1, 500] = 30 * LAPLACE_ERROR_TOLERANCE
    failed = verdict(short)
    assert not failed["passed"]
    assert failed["checks"]["laplace_error"] == 30 * LAPLACE_ERROR_TOLERANCE
    assert any("newton_steps" in f for f in failed["failures"])
    assert "laplace_error" not in verdict(None)["checks"]
