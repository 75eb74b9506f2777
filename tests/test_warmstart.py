"""Warm starts: the mass matrix built from an earlier posterior, its potential, and that
sampling under it targets the same posterior whatever the matrix."""

from __future__ import annotations

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr
from gaussians import factor_gaussian, spread
from pymc.step_methods.hmc.quadpotential import QuadPotentialFull

from gapmodel.fit import sample
from gapmodel.spec import ModelSpec
from gapmodel.warmstart import (
    DENSE_VARIABLE_SIZE,
    LOW_RANK_CUTOFF,
    BlockPotential,
    WarmStartError,
    low_rank_estimate,
    unconstrained_draws,
    warm_start,
)

SPEC = ModelSpec.model_validate({
    "name": "warm", "condition": "test", "data": {"kind": "directory", "path": "unused"},
    "sampler": {"chains": 2, "tune": 200, "draws": 1000, "seed": 11,
                "warm_start": {"tune": 200, "draws": 1000}}})


def _posterior(values: dict[str, np.ndarray]) -> xr.Dataset:
    """A posterior Dataset from arrays shaped (chain, draw, ...)."""
    return xr.Dataset({name: (("chain", "draw", *[f"{name}_{i}" for i in range(v.ndim - 2)]),
                              v) for name, v in values.items()})


def _small_model(size: int = DENSE_VARIABLE_SIZE + 8) -> pm.Model:
    with pm.Model() as model:
        pm.Normal("a", 0, 1)
        pm.HalfNormal("s", 1)
        pm.Normal("v", 0, 1, shape=size)
    return model


def test_block_potential_equals_the_dense_potential():
    rng = np.random.default_rng(0)
    n, dense = 7, np.array([1, 2, 5])
    factor = rng.normal(size=(3, 3))
    block = factor @ factor.T + 0.5 * np.eye(3)
    variance = rng.uniform(0.5, 2.0, size=n)
    full = np.diag(variance)
    full[np.ix_(dense, dense)] = block
    ours, reference = BlockPotential(dense, block, variance), QuadPotentialFull(full)
    x = rng.normal(size=n)
    np.testing.assert_allclose(ours.velocity(x), reference.velocity(x), rtol=1e-12)
    np.testing.assert_allclose(ours.energy(x), reference.energy(x), rtol=1e-12)
    out = np.empty(n)
    assert ours.velocity_energy(x, out) == pytest.approx(reference.energy(x), rel=1e-12)
    # momenta are N(0, M) with M the inverse of the covariance
    momenta = np.stack([ours.random() for _ in range(40_000)])
    target = np.linalg.inv(full)
    sd = np.sqrt((target**2 + np.outer(np.diag(target), np.diag(target))) / len(momenta))
    assert np.all(np.abs(np.cov(momenta.T) - target) < 5 * sd)


def test_the_low_rank_term_stretches_the_block_potential_along_its_directions():
    """With (U, values) the covariance is R (I + U (diag(values) - I) U') R', R the block
    + diagonal's root; each momentum is that covariance's inverse's root times a normal."""
    rng = np.random.default_rng(3)
    n, dense = 9, np.array([0, 4, 5])
    factor = rng.normal(size=(3, 3))
    block = factor @ factor.T + 0.5 * np.eye(3)
    variance = rng.uniform(0.5, 2.0, size=n)
    vectors = np.linalg.qr(rng.normal(size=(n, 2)))[0]
    values = np.array([8.0, 0.25])
    ours = BlockPotential(dense, block, variance, low_rank=(vectors, values))
    root = np.diag(np.sqrt(variance))
    root[np.ix_(dense, dense)] = np.linalg.cholesky(block)
    full = root @ (np.eye(n) + vectors @ np.diag(values - 1.0) @ vectors.T) @ root.T
    reference = QuadPotentialFull(full)
    x = rng.normal(size=n)
    np.testing.assert_allclose(ours.velocity(x), reference.velocity(x), rtol=1e-12)
    np.testing.assert_allclose(ours.energy(x), reference.energy(x), rtol=1e-12)
    momentum = np.column_stack([ours.momentum(e) for e in np.eye(n)])
    np.testing.assert_allclose(momentum @ momentum.T @ full, np.eye(n), atol=1e-10)
    assert ours.rank == 2
    assert ours.stats() == {"largest_eigval": 8.0, "smallest_eigval": 0.25}


def test_warm_start_is_dense_over_small_variables_in_sampled_coordinates():
    rng = np.random.default_rng(1)
    model = _small_model()
    chains, draws = 2, 600
    a = rng.normal(size=(chains, draws))
    log_s = 0.8 * a + 0.6 * rng.normal(size=(chains, draws)) - 1.0
    v = rng.normal(3.0, 2.0, size=(chains, draws, DENSE_VARIABLE_SIZE + 8))
    posterior = _posterior({"a": a, "s": np.exp(log_s), "v": v})
    warm = warm_start(model, posterior, "earlier")
    assert warm.source == "earlier"
    names = [value.name for value in model.value_vars]
    assert names == ["a", "s_log__", "v"]
    np.testing.assert_array_equal(warm.dense, [0, 1])  # a and log s; v is too large
    n = chains * draws
    expected = np.cov(np.stack([a.ravel(), log_s.ravel()]))
    expected = n / (n + 5) * expected + 1e-3 * 5 / (n + 5) * np.eye(2)
    np.testing.assert_allclose(warm.block_cov, expected, rtol=1e-10)
    np.testing.assert_allclose(warm.variance[2:], v.reshape(n, -1).var(axis=0), rtol=1e-10)
    assert [p["a"] for p in warm.points] == [a[0, -1], a[1, -1]]
    assert [p["s"] for p in warm.initvals(3)] == [np.exp(log_s[0, -1]), np.exp(log_s[1, -1]),
                                                   np.exp(log_s[0, -1])]
    draws_by_name = unconstrained_draws(model, posterior)
    np.testing.assert_allclose(draws_by_name["s_log__"][:, 0], log_s.ravel(), atol=1e-12)


@pytest.mark.parametrize("seed", [7, 8])
def test_a_warm_start_adds_the_low_rank_term_the_gradients_at_its_draws_find(seed):
    """An earlier posterior with a long direction across the coordinates the block leaves
    diagonal: its draws' covariance over the block and variances elsewhere leave a spread
    above 6; the model's gradients at those draws add the directions off by more than 4,
    leaving under 4 (sqrt(4 / (1 / 4)), what the cutoff leaves). The start keeps the
    compiled log density for the run to reuse."""
    rng = np.random.default_rng(seed)
    dense, cov = factor_gaussian(rng, d=60)
    with pm.Model() as model:  # a 4-coordinate variable in the block, the rest diagonal
        b, v = pm.Flat("b", shape=4), pm.Flat("v", shape=56)
        pm.Potential("density", pm.logp(pm.MvNormal.dist(np.zeros(60), cov),
                                        pt.concatenate([b, v])))
    draws = rng.multivariate_normal(np.zeros(60), cov, size=(2, 600))
    posterior = _posterior({"b": draws[..., :4], "v": draws[..., 4:]})
    without = warm_start(model, posterior, "earlier", low_rank_cutoff=None)
    warm = warm_start(model, posterior, "earlier")
    np.testing.assert_array_equal(warm.dense, dense)
    assert without.low_rank is None and without.logp_dlogp is None
    assert spread(without.potential(), cov) > 6.0
    assert warm.potential().rank >= 1
    assert spread(warm.potential(), cov) < 4.0
    assert warm.logp_dlogp is not None


def test_a_warm_start_takes_its_low_rank_term_from_the_model_s_gradients_at_its_draws():
    """The term is the estimate from the earlier draws and the model's own gradients at
    each of them: for N(0, C) exactly -C^-1 x, draw by draw."""
    rng = np.random.default_rng(9)
    _, cov = factor_gaussian(rng, d=60)
    with pm.Model() as model:
        pm.MvNormal("x", np.zeros(60), cov)
    draws = rng.multivariate_normal(np.zeros(60), cov, size=(2, 400))
    warm = warm_start(model, _posterior({"x": draws}), "earlier")
    rows = draws.reshape(800, 60)
    base = BlockPotential(warm.dense, warm.block_cov, warm.variance)
    vectors, values = low_rank_estimate(*base.whiten(rows, -rows @ np.linalg.inv(cov)),
                                        cutoff=LOW_RANK_CUTOFF)
    assert len(values) >= 1
    np.testing.assert_allclose(warm.low_rank[1], values, rtol=1e-6)
    np.testing.assert_allclose(np.abs(warm.low_rank[0].T @ vectors), np.eye(len(values)),
                               atol=1e-6)


def test_a_warm_start_leaves_out_draws_where_the_new_model_has_no_finite_gradient():
    """New data can rule out some of the earlier draws: the low-rank term comes from the
    rest, and from none where fewer than 100 are left."""
    with pm.Model() as model:
        x = pm.Flat("x", shape=40)
        pm.Potential("density", pt.sum(pt.sqrt(x + 3.0)) - 0.5 * pt.sum(x**2))
    draws = np.random.default_rng(5).normal(size=(2, 300, 40))
    draws[0, :250, 0] = -5.0  # the gradient of sqrt(x + 3) is NaN there
    warm = warm_start(model, _posterior({"x": draws}), "earlier")
    assert warm.low_rank is not None
    assert all(np.isfinite(part).all() for part in warm.low_rank)
    draws[1, :, 0] = -5.0  # 50 draws left
    assert warm_start(model, _posterior({"x": draws}), "earlier").low_rank is None


def test_warm_start_refuses_a_posterior_of_another_model():
    rng = np.random.default_rng(2)
    model = _small_model()
    good = {"a": rng.normal(size=(2, 200)), "s": rng.uniform(0.5, 1, size=(2, 200)),
            "v": rng.normal(size=(2, 200, DENSE_VARIABLE_SIZE + 8))}
    with pytest.raises(WarmStartError, match="no variable 's'"):
        warm_start(model, _posterior({k: good[k] for k in ("a", "v")}), "x")
    with pytest.raises(WarmStartError, match="'v' has shape"):
        warm_start(model, _posterior({**good, "v": good["v"][..., :5]}), "x")
    with pytest.raises(WarmStartError, match="only 20 draws"):
        warm_start(model, _posterior({k: x[:, :10] for k, x in good.items()}), "x")


def test_sampling_from_a_poor_warm_start_targets_the_same_posterior():
    """A mass matrix from the wrong covariance, and starts far out, still give the model's
    posterior: N(m, S) with correlation 0.9, checked against its exact moments within a
    few Monte Carlo standard errors."""
    mean = np.array([1.0, -2.0])
    cov = np.array([[1.0, 0.9 * 0.5], [0.9 * 0.5, 0.25]])
    with pm.Model() as model:
        pm.MvNormal("x", mean, cov)
    rng = np.random.default_rng(3)
    wrong = rng.multivariate_normal(mean + 3.0, np.diag([4.0, 0.01]), size=(2, 400))
    warm = warm_start(model, _posterior({"x": wrong}), "earlier")
    idata = sample(model, SPEC, progress=False, warm=warm)
    draws = idata.posterior["x"]
    assert draws.sizes["draw"] == 1000
    assert int(idata.sample_stats["diverging"].sum()) == 0
    # the mass matrix ignores the correlation, so mixing is slow; the Monte Carlo errors
    # below account for it, given enough effective draws to estimate them
    assert float(az.ess(draws).min()) > 100
    mcse = az.mcse(draws).values
    estimate = draws.mean(("chain", "draw")).values
    assert np.all(np.abs(estimate - mean) < 4 * mcse)
    mcse_sd = az.mcse(draws, method="sd").values
    sd = draws.std(("chain", "draw")).values
    assert np.all(np.abs(sd - np.sqrt(np.diag(cov))) < 4 * mcse_sd)


def test_a_warm_start_s_maxdepth_caps_its_trees():
    """The warm-start settings' maxdepth reaches PyMC's NUTS: no draw takes more than
    2^maxdepth - 1 gradients, where the same run without it takes more (a target
    acceptance of 0.99 makes the steps short)."""
    with pm.Model() as model:
        pm.Normal("x", 0.0, 1.0, shape=2)
    rng = np.random.default_rng(4)
    warm = warm_start(model, _posterior({"x": rng.normal(size=(2, 400, 2))}), "earlier")
    steps = {}
    for depth in (None, 3):
        settings = SPEC.sampler.warm_start.model_copy(
            update={"tune": 100, "draws": 200, "target_accept": 0.99, "maxdepth": depth})
        spec = SPEC.model_copy(update={"sampler": SPEC.sampler.model_copy(
            update={"warm_start": settings})})
        idata = sample(model, spec, progress=False, warm=warm)
        steps[depth] = int(idata.sample_stats["n_steps"].max())
    assert steps[3] <= 7 < steps[None]
