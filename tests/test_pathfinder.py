"""Pathfinder's approximation and the mass matrix a first fit adapts from it."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest
from gaussians import factor_gaussian, spread

from gapmodel import warmstart
from gapmodel.pathfinder import PathfinderError, pathfinder
from gapmodel.warmstart import (
    AdaptiveBlockPotential,
    BlockPotential,
    adaptation_windows,
    draws_and_gradients_estimate,
    low_rank_estimate,
    pathfinder_start,
)


def _gaussian(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((n, n))
    return rng.standard_normal(n) * 3, a @ a.T / n + np.diag(rng.uniform(0.1, 2.0, n))


@pytest.mark.parametrize("n", [3, 40, 300])
def test_on_a_gaussian_the_approximation_sits_in_the_bulk(n):
    """From 10 sd away, the chosen approximation's mean is the Gaussian's mean to within a
    few hundredths of an sd, and its draws lie inside the Gaussian's bulk: their squared
    Mahalanobis distances average no more than chi-squared's mean plus five of its sds
    (Pathfinder's draws are known to be too narrow, never too wide)."""
    rng = np.random.default_rng(n)
    mean, cov = _gaussian(n, rng)
    precision = np.linalg.inv(cov)
    sd = np.sqrt(np.diag(cov))

    def logp_grad(x):
        d = x - mean
        return -0.5 * d @ precision @ d - 100.0, -precision @ d

    approx = pathfinder(logp_grad, mean + 10 * sd, rng)
    assert np.max(np.abs(approx.mean - mean) / sd) < 0.05
    draws = approx.draw(rng.standard_normal((2000, n)))
    distance = np.einsum("ij,jk,ik->i", draws - mean, precision, draws - mean)
    assert distance.mean() < n + 5 * np.sqrt(2 * n)
    variance = approx.variance()
    assert np.allclose(variance, draws.var(axis=0), rtol=0.25)
    index = np.arange(min(n, 4))
    assert np.allclose(approx.covariance(index)[np.diag_indices(len(index))],
                       variance[index])
    assert approx.evaluations > approx.iterations >= approx.iteration >= 1


def test_the_elbo_stops_it_short_of_a_collapsing_scale():
    """Eight schools, centred: the log density grows without bound as tau goes to 0 with
    every theta at mu, so L-BFGS climbs towards log tau = -infinity, and the mode's own
    Laplace approximation would sit at the path's end. The ELBO picks an approximation far
    above it (though not in the posterior's bulk, where log tau's median is about 1: the
    funnel is Pathfinder's known hard case, which the warm run's adaptation takes on)."""
    y = np.array([28.0, 8, -3, 7, -1, 1, 18, 12])
    sigma = np.array([15.0, 10, 16, 11, 9, 11, 10, 18])
    with pm.Model() as model:
        mu = pm.Normal("mu", 0, 5)
        tau = pm.HalfCauchy("tau", 5)
        theta = pm.Normal("theta", mu, tau, shape=8)
        pm.Normal("y", theta, sigma, observed=y)
    assert [v.name for v in model.value_vars] == ["mu", "tau_log__", "theta"]
    logp_grad = model.logp_dlogp_function(ravel_inputs=True)
    logp_grad.set_extra_values({})
    path: list[float] = []

    def recording(x):
        path.append(x[1])  # log tau
        return logp_grad(x)

    approx = pathfinder(recording, np.zeros(10), np.random.default_rng(8))
    assert min(path) < -12
    assert approx.mean[1] > min(path) + 6


def test_a_start_without_a_finite_density_is_an_error():
    with pytest.raises(PathfinderError, match="starting point"):
        pathfinder(lambda x: (-np.inf, np.zeros_like(x)), np.zeros(3),
                   np.random.default_rng(0))


@pytest.mark.parametrize(("tune", "settle", "windows"), [
    (1000, 75, [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]),  # Stan's own
    (100, 75, [(15, 90)]),
    (400, 0, [(0, 25), (25, 75), (75, 350)]),
    (100, 0, [(0, 90)]),
])
def test_adaptation_windows_follow_stan(tune, settle, windows):
    assert adaptation_windows(tune, settle) == windows


#: a Gaussian whose coordinates 0 and 2 are tied (the dense block), and 1 and 3 (the
#: diagonal part) too
TRUE_COV = np.array([[1.0, 0.0, 0.6, 0.0], [0.0, 2.0, 0.0, 0.4], [0.6, 0.0, 1.5, 0.0],
                     [0.0, 0.4, 0.0, 0.5]])


def test_the_adaptive_potential_learns_each_window_and_stays_fixed_after_tuning():
    """At each window's end the matrix becomes the window's estimate from its draws and
    gradients blended with the one before it (as 10 draws); draws outside windows and
    after tuning change nothing; a chain's reset returns the starting matrix."""
    rng = np.random.default_rng(5)
    dense = np.array([0, 2])
    block0, variance0 = np.eye(2) * 4.0, np.full(4, 4.0)
    potential = AdaptiveBlockPotential(dense, block0, variance0, tune=100, rng=rng)
    precision = np.linalg.inv(TRUE_COV)
    draws = rng.multivariate_normal(np.zeros(4), TRUE_COV, size=120)
    for x in draws[:100]:
        potential.update(x, -precision @ x, tune=True)
    window = draws[:90]  # tune=100: one window, steps 0 to 89
    block, variance = draws_and_gradients_estimate(window, -window @ precision, dense)
    # 90 draws: too few for a low-rank term
    expected = BlockPotential(dense, (90 * block + 10 * block0) / 100,
                              (90 * variance + 10 * variance0) / 100)
    assert potential.rank == 0
    x = rng.standard_normal(4)
    velocity = potential.velocity(x)
    assert np.allclose(velocity, expected.velocity(x))
    for x_after in draws[100:]:
        potential.update(x_after, -precision @ x_after, tune=False)
    assert np.allclose(potential.velocity(x), velocity)
    potential.reset()
    assert np.allclose(potential.velocity(x), 4.0 * x)


@pytest.mark.parametrize("reach", [1.0, 0.1])
def test_draws_and_gradients_find_the_covariance_from_a_chain_that_barely_moved(reach):
    """A window whose chain explored only `reach` of the posterior's width (its draws a
    shrunken copy of the posterior's) gives the same estimate as one that explored it
    all: the draws see reach x its sd, the gradients 1 / reach x its precision's root.
    That estimate is the covariance over a block tied to nothing else, and between the
    variance given the others and the marginal one for a tied coordinate. From the draws
    alone the window would give reach^2 x the variances."""
    rng = np.random.default_rng(11)
    precision = np.linalg.inv(TRUE_COV)
    dense = np.array([0, 2])
    draws = reach * rng.multivariate_normal(np.zeros(4), TRUE_COV, size=4000)
    block, variance = draws_and_gradients_estimate(draws, -draws @ precision, dense)
    # the block has no ties to the rest: its estimate is its covariance
    assert np.allclose(block, TRUE_COV[np.ix_(dense, dense)], rtol=0.05, atol=0.03)
    # a tied pair on the diagonal: the geometric mean of each one's marginal variance and
    # its variance given the other
    marginal, conditional = np.diag(TRUE_COV), 1.0 / np.diag(precision)
    assert np.allclose(variance[[1, 3]], np.sqrt(marginal * conditional)[[1, 3]], rtol=0.05)
    assert np.all(conditional[[1, 3]] < 0.9 * marginal[[1, 3]])
    assert np.allclose(draws.var(axis=0), reach**2 * np.diag(TRUE_COV), rtol=0.08)


def _low_rank_adapted(cov: np.ndarray, dense: np.ndarray, window: int,
                      rng: np.random.Generator) -> tuple[BlockPotential, BlockPotential]:
    """The block + diagonal potential one window of posterior draws and their gradients
    give, and the same with the low-rank term that window finds against it."""
    draws = rng.multivariate_normal(np.zeros(len(cov)), cov, size=window)
    grads = -draws @ np.linalg.inv(cov)
    estimate = draws_and_gradients_estimate(draws, grads, dense)
    base = BlockPotential(dense, *estimate)
    vectors, values = low_rank_estimate(*base.whiten(draws, grads))
    assert np.all((values > 2.0) | (values < 0.5))
    assert np.allclose(vectors.T @ vectors, np.eye(len(values)))
    return base, BlockPotential(dense, *estimate, low_rank=(vectors, values))


@pytest.mark.parametrize("seed", [7, 8])
def test_the_low_rank_term_follows_a_direction_across_the_diagonal_coordinates(seed):
    """A long direction spread over the coordinates the block leaves diagonal (as a smooth
    spatial pattern spreads over the areas) is one no block-diagonal matrix follows: the
    spread stays above 6. From a window with more draws than coordinates the low-rank term
    leaves no direction off by more than its cutoff (2), so a spread under 2."""
    rng = np.random.default_rng(seed)
    dense, cov = factor_gaussian(rng, d=60)
    base, adapted = _low_rank_adapted(cov, dense, 100, rng)
    assert spread(base, cov) > 6.0
    assert spread(adapted, cov) < 2.0
    assert adapted.rank >= 1


@pytest.mark.parametrize("seed", [7, 8])
def test_with_fewer_draws_than_coordinates_the_low_rank_term_still_finds_the_long_one(
        seed):
    """With 200 draws over 400 coordinates (a 1,000-area window has 275 over 3,032) the
    span of the draws and gradients holds the long direction but not every direction the
    diagonal got wrong: the low-rank term cuts the spread by more than half, not to 2."""
    rng = np.random.default_rng(seed)
    dense, cov = factor_gaussian(rng, d=400)
    base, adapted = _low_rank_adapted(cov, dense, 200, rng)
    assert spread(base, cov) > 6.0
    assert spread(adapted, cov) < 0.5 * spread(base, cov)
    assert adapted.rank >= 1


@pytest.mark.parametrize("seed", [7, 8])
def test_the_low_rank_term_is_empty_where_the_block_and_diagonal_fit(seed):
    """A Gaussian whose covariance is block + diagonal leaves nothing for the low-rank
    term: no direction is off by more than the cutoff."""
    rng = np.random.default_rng(seed)
    dense, cov = factor_gaussian(rng, d=60, strength=0.0)
    _, adapted = _low_rank_adapted(cov, dense, 100, rng)
    assert adapted.rank == 0


def test_a_long_window_adds_the_low_rank_term_it_finds_against_the_blended_matrix():
    """From a window of 100 draws or more the potential adds the directions off by more
    than 4 that the window's draws and gradients find against its blended block +
    diagonal; on a Gaussian with a long direction across the diagonal coordinates the
    spread then falls from above 6 to under 4 (sqrt(4 / (1 / 4)), what the cutoff leaves)."""
    rng = np.random.default_rng(9)
    dense, cov = factor_gaussian(rng, d=60)
    start = (np.eye(4), np.ones(len(cov)))
    potential = AdaptiveBlockPotential(dense, *start, tune=200, rng=rng)
    draws = rng.multivariate_normal(np.zeros(len(cov)), cov, size=150)
    grads = -draws @ np.linalg.inv(cov)
    for x, g in zip(draws, grads, strict=True):
        potential.update(x, g, tune=True)
    first = draws_and_gradients_estimate(draws[:25], grads[:25], dense)
    base = [(25 * new + 10 * old) / 35 for new, old in zip(first, start, strict=True)]
    second = draws_and_gradients_estimate(draws[25:], grads[25:], dense)
    base = [(125 * new + 10 * old) / 135 for new, old in zip(second, base, strict=True)]
    whitened = BlockPotential(dense, *base).whiten(draws[25:], grads[25:])
    expected = BlockPotential(dense, *base,
                              low_rank=low_rank_estimate(*whitened, cutoff=4.0))
    x = rng.standard_normal(len(cov))
    assert potential.rank >= 1
    assert np.allclose(potential.velocity(x), expected.velocity(x))
    assert spread(BlockPotential(dense, *base), cov) > 6.0
    assert spread(potential, cov) < 4.0


@pytest.mark.parametrize("seed", [0, 1])
def test_a_first_fit_starts_from_pathfinders_draws_and_their_gradients(seed):
    """On a Gaussian whose coordinates' sds span e^-3 to e^3 (a 4-coordinate block and 56
    diagonal ones), L-BFGS's few position and gradient differences leave Pathfinder's own
    covariance a spread above 50 (about the leapfrog steps a draw needs). Its draws and
    the log density's gradients at them give a first matrix with a spread under 1.3, as a
    window of draws and gradients would: each coordinate's sd whatever the draws' width."""
    rng = np.random.default_rng(seed)
    _, cov = factor_gaussian(rng, d=60, strength=0.0)
    sd = np.exp(rng.uniform(-3, 3, 60))
    cov = cov * np.outer(sd, sd)
    with pm.Model() as model:
        pm.MvNormal("a", mu=np.zeros(4), cov=cov[:4, :4])
        pm.MvNormal("b", mu=np.zeros(56), cov=cov[4:, 4:])
    own = pathfinder_start(model, 2, seed, 100, estimate_draws=0)
    start = pathfinder_start(model, 2, seed, 100)
    assert list(start.dense) == [0, 1, 2, 3] and start.adapt_tune == 100
    assert spread(BlockPotential(own.dense, own.block_cov, own.variance), cov) > 50
    assert spread(BlockPotential(start.dense, start.block_cov, start.variance), cov) < 1.3
    # the same starting points either way: the estimate's draws come after the chains'
    for a, b in zip(own.points, start.points, strict=True):
        assert np.array_equal(a["b"], b["b"])


def test_without_finite_gradients_a_first_fit_starts_from_pathfinders_covariance(
        monkeypatch):
    """Where one draw too few has a finite gradient (99 of 200), the first matrix is
    Pathfinder's own covariance."""
    with pm.Model() as model:
        pm.Normal("x", 0.0, np.array([0.1, 1.0, 10.0]))
    own = pathfinder_start(model, 2, 3, 100, estimate_draws=0)
    lost = warmstart.PATHFINDER_DRAWS - warmstart.MIN_GRADIENT_DRAWS + 1
    monkeypatch.setattr(warmstart, "_gradients",
                        lambda f, rows: np.where(np.arange(len(rows))[:, None] < lost, np.nan,
                                                 np.ones_like(rows)))
    start = pathfinder_start(model, 2, 3, 100)
    assert np.array_equal(start.variance, own.variance)
    assert np.array_equal(start.block_cov, own.block_cov)
