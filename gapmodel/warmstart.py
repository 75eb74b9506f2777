"""Warm starts: a refit's NUTS mass matrix and starting points from an earlier posterior.

A recalibration refits a model whose posterior barely moves. Its geometry is known from the
version it replaces: the covariance of that posterior's draws, in the sampler's own
(unconstrained) coordinates, is a mass matrix that already follows the ridges between the
detection intercept, the prevalence intercepts and the age effects, which nutpie's low-rank
adaptation only partly learns in 1,000 tuning steps. So a warm start samples with PyMC's
NUTS under that fixed mass matrix, from the earlier version's last draws, and tunes only the
step size. Any positive-definite mass matrix leaves the posterior unchanged; the gate still
judges the fit (docs/performance.md has the figures).

The matrix is dense over the small variables (intercepts, group effects, coefficients,
scales: a few dozen coordinates, well estimated from thousands of draws) and diagonal over
the large ones (per-area vectors), whose dense covariance could not be estimated from the
draws and would make every leapfrog step cost as much as a gradient. A low-rank term adds
the few directions that cross every coordinate (a smooth spatial pattern traded between
the detection effects and the prevalence deviations), found from the new model's
gradients at the earlier draws as nutpie's low-rank adaptation finds them.

A first fit has no earlier posterior. `pathfinder_start` takes the starting points from
Pathfinder's Gaussian approximation (`gapmodel.pathfinder`), and a first matrix of the
same shape from more of its draws and the log density's gradients at them: the
approximation's own covariance can be too narrow or too wide by orders of magnitude
along some coordinates, which draws and gradients together correct. That run's tuning
then adapts the matrix to its own draws and their gradients (`AdaptiveBlockPotential`,
over Stan's windows), adding from its longest window a low-rank term for the few
directions that cross every coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pymc.blocking import DictToArrayBijection, RaveledVars
from pymc.step_methods.hmc.quadpotential import QuadPotential
from scipy import linalg

from gapmodel.pathfinder import Approximation, pathfinder

#: Variables up to this many coordinates join the dense block of the mass matrix...
DENSE_VARIABLE_SIZE = 32
#: ...which holds at most this many coordinates (further small variables are diagonal).
DENSE_BLOCK_LIMIT = 256
#: The low-rank term keeps the directions in which the block + diagonal is off by more
#: than this factor...
LOW_RANK_CUTOFF = 4.0
#: ...estimated for a warm start from the gradients at up to this many earlier draws.
GRADIENT_DRAWS = 1000
#: A first fit's first matrix comes from this many draws of Pathfinder's approximation
#: and the log density's gradients at them.
PATHFINDER_DRAWS = 200
#: Fewer draws with a finite gradient than this give no estimate (no low-rank term for a
#: refit, Pathfinder's own covariance for a first fit).
MIN_GRADIENT_DRAWS = 100


class WarmStartError(ValueError):
    """The earlier posterior does not fit the model (its variables or shapes differ)."""


@dataclass(frozen=True)
class WarmStart:
    """What a warm-started fit needs from the version it starts from."""

    source: str  # the earlier version's id
    dense: np.ndarray  # positions (in the model's flattened value variables) of the block
    block_cov: np.ndarray  # the block's covariance
    variance: np.ndarray  # every coordinate's variance (the block's entries unused)
    points: list[dict[str, np.ndarray]]  # per earlier chain: its last draw, by variable
    #: the run's tuning steps, over which it adapts the matrix; None: the spec's warm-start
    #: tuning, the matrix fixed
    adapt_tune: int | None = None
    #: the compiled log density and gradient the start was found with (PyMC's
    #: `ValueGradFunction` over the model's value variables), for the run to reuse
    logp_dlogp: Any = None
    #: a fixed matrix's low-rank term, (U, values) as `BlockPotential` takes it
    low_rank: tuple[np.ndarray, np.ndarray] | None = None
    #: an adapted matrix's cutoff for its low-rank term (None: no term)
    low_rank_cutoff: float | None = LOW_RANK_CUTOFF

    def nuts(self, model: pm.Model, target_accept: float, maxdepth: int | None = None
             ) -> pm.NUTS:
        """PyMC's NUTS over the model's value variables under this start's potential,
        reusing the compiled log density where the start has it; trees at most `maxdepth`
        deep (none: PyMC's default)."""
        reuse = {} if self.logp_dlogp is None else {"logp_dlogp_func": self.logp_dlogp}
        depth = {} if maxdepth is None else {"max_treedepth": maxdepth}
        return pm.NUTS(vars=model.value_vars, potential=self.potential(),
                       target_accept=target_accept, model=model, **reuse, **depth)

    def potential(self, rng=None) -> BlockPotential:
        if self.adapt_tune is not None:
            return AdaptiveBlockPotential(self.dense, self.block_cov, self.variance,
                                          self.adapt_tune, rng=rng,
                                          low_rank_cutoff=self.low_rank_cutoff)
        return BlockPotential(self.dense, self.block_cov, self.variance, rng=rng,
                              low_rank=self.low_rank)

    def initvals(self, chains: int) -> list[dict[str, np.ndarray]]:
        """Starting points for `chains` chains, cycling over the earlier chains' ends."""
        return [self.points[c % len(self.points)] for c in range(chains)]


def unconstrained_draws(model: pm.Model, posterior: xr.Dataset) -> dict[str, np.ndarray]:
    """Each free variable's draws (chain x draw flattened, then the variable's own values
    flattened) in the sampler's coordinates: transformed as the model samples them."""
    out = {}
    initial = model.initial_point()
    for rv in model.free_RVs:
        if rv.name not in posterior:
            raise WarmStartError(f"the earlier posterior has no variable '{rv.name}'")
        values = posterior[rv.name].values
        transform = model.rvs_to_transforms[rv]
        if transform is not None:
            try:
                values = transform.forward(pt.as_tensor(values), *rv.owner.inputs).eval()
            except ValueError as exc:
                raise WarmStartError(f"'{rv.name}' does not match this model: {exc}") \
                    from None
        shape = initial[model.rvs_to_values[rv].name].shape
        if values.shape[2:] != shape:
            raise WarmStartError(f"'{rv.name}' has shape {values.shape[2:]} in the earlier "
                                 f"posterior, {shape} in this model")
        out[model.rvs_to_values[rv].name] = np.asarray(values, dtype=float).reshape(
            values.shape[0] * values.shape[1], -1)
    return out


def warm_start(model: pm.Model, posterior: xr.Dataset, source: str,
               low_rank_cutoff: float | None = LOW_RANK_CUTOFF) -> WarmStart:
    """The mass matrix and starting points for `model` from `posterior`, the draws of an
    earlier fit of the same spec; WarmStartError if the two do not match. The matrix is
    the draws' covariance over the dense block and their variances elsewhere, with a
    low-rank term from the model's gradients at up to `GRADIENT_DRAWS` of the draws
    (`low_rank_estimate`; None: none) for the directions that cross every coordinate."""
    draws = unconstrained_draws(model, posterior)
    sizes = [d.shape[1] for d in draws.values()]
    flat = np.concatenate(list(draws.values()), axis=1)
    n = flat.shape[0]
    if n < 100:
        raise WarmStartError(f"the earlier posterior has only {n} draws (needs 100)")
    index = _dense_positions(sizes)
    variance = flat.var(axis=0)
    if not np.all(np.isfinite(variance)) or variance.min() <= 0:
        raise WarmStartError("the earlier posterior has a coordinate that does not vary")
    # Stan's regularisation of an estimated mass matrix: shrink towards a small diagonal
    block = np.cov(flat[:, index].T).reshape(len(index), len(index))
    block = (n / (n + 5.0)) * block + 1e-3 * (5.0 / (n + 5.0)) * np.eye(len(index))
    chains = posterior.sizes["chain"]
    points = [{rv.name: posterior[rv.name].values[c, -1] for rv in model.free_RVs}
              for c in range(chains)]
    logp_grad, low_rank = None, None
    if low_rank_cutoff is not None:
        logp_grad = model.logp_dlogp_function(model.value_vars, ravel_inputs=True)
        logp_grad.set_extra_values({})
        rows = flat[np.unique(np.linspace(0, n - 1, min(n, GRADIENT_DRAWS)).astype(int))]
        grads = _gradients(logp_grad, rows)
        finite = np.isfinite(grads).all(axis=1)  # new data may rule out an earlier draw
        if finite.sum() >= MIN_GRADIENT_DRAWS:
            base = BlockPotential(index, block, variance)
            low_rank = low_rank_estimate(*base.whiten(rows[finite], grads[finite]),
                                         cutoff=low_rank_cutoff)
    return WarmStart(source=source, dense=index, block_cov=block, variance=variance,
                     points=points, logp_dlogp=logp_grad, low_rank=low_rank)


def pathfinder_start(model: pm.Model, chains: int, seed: int, tune: int,
                     estimate_draws: int = PATHFINDER_DRAWS) -> WarmStart:
    """A first fit's start without an earlier posterior: Pathfinder's approximation from
    the initial point jittered by up to 2 on each coordinate (Stan's initialisation) gives
    each chain its starting point (a draw), and `estimate_draws` more of its draws with
    the log density's gradients at them the mass matrix to begin from
    (`draws_and_gradients_estimate`; 0, or fewer than 100 draws with a finite gradient:
    the approximation's own covariance, which can be orders of magnitude off along some
    coordinates), which the run adapts over its `tune` steps."""
    rng = np.random.default_rng(seed)
    logp_grad, approx, layout = pathfinder_approximation(model, seed, rng)
    sizes = [size for _, _, size, _ in layout]
    index = _dense_positions(sizes)
    draws = approx.draw(rng.standard_normal((chains, sum(sizes))))
    points = [_constrained(model, DictToArrayBijection.rmap(RaveledVars(d, layout)))
              for d in draws]
    block, variance = approx.covariance(index), approx.variance()
    if estimate_draws:
        sample = approx.draw(rng.standard_normal((estimate_draws, sum(sizes))))
        grads = _gradients(logp_grad, sample)
        finite = np.isfinite(grads).all(axis=1)
        if finite.sum() >= MIN_GRADIENT_DRAWS:
            block, variance = draws_and_gradients_estimate(sample[finite], grads[finite],
                                                           index)
    return WarmStart(source="pathfinder", dense=index, block_cov=block, variance=variance,
                     points=points, adapt_tune=tune, logp_dlogp=logp_grad)


def pathfinder_approximation(model: pm.Model, seed: int, rng: np.random.Generator
                             ) -> tuple[Any, Approximation, list[tuple]]:
    """The model's compiled log density and gradient (value variables raveled), Pathfinder's
    approximation from its initial point jittered by up to 2 on each coordinate, and the
    raveling's layout (name, shape, size, dtype per value variable)."""
    logp_grad = model.logp_dlogp_function(model.value_vars, ravel_inputs=True)
    logp_grad.set_extra_values({})
    initial = model.initial_point(random_seed=seed)
    layout = [(v.name, initial[v.name].shape, initial[v.name].size, initial[v.name].dtype)
              for v in model.value_vars]
    start = DictToArrayBijection.map({name: initial[name] for name, *_ in layout}).data
    return logp_grad, pathfinder(logp_grad, start + rng.uniform(-2, 2, size=start.size),
                                 rng), layout


def _gradients(logp_grad, rows: np.ndarray) -> np.ndarray:
    """The log density's gradient at each row, each copied as it comes: a compiled
    function may reuse its output."""
    return np.array([np.array(logp_grad(x)[1], dtype=float) for x in rows])


def _dense_positions(sizes: list[int]) -> np.ndarray:
    """Positions in the flattened coordinates of the variables in the dense block."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    dense: list[int] = []
    for k, size in enumerate(sizes):
        if size <= DENSE_VARIABLE_SIZE and len(dense) + size <= DENSE_BLOCK_LIMIT:
            dense += range(offsets[k], offsets[k + 1])
    return np.array(dense, dtype=int)


def _constrained(model: pm.Model, point: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A point in the sampler's coordinates (by value variable) as each free variable's
    own value (by name), the form of PyMC's initvals."""
    out = {}
    for rv in model.free_RVs:
        value = point[model.rvs_to_values[rv].name]
        transform = model.rvs_to_transforms[rv]
        if transform is not None:
            value = transform.backward(pt.as_tensor(value), *rv.owner.inputs).eval()
        out[rv.name] = np.asarray(value)
    return out


def adaptation_windows(tune: int, settle: int = 0) -> list[tuple[int, int]]:
    """Slow adaptation windows over `tune` steps, as (first, past-last) steps, on Stan's
    pattern: after `settle` steps, windows of 25, 50, 100, ... (the last taking what is
    left) up to 50 steps before the end; over runs shorter than 150, at most 15% settling
    and 10% at the end. Stan settles for 75 steps to reach the posterior's bulk; a start
    drawn from Pathfinder's approximation is there already, and its first matrix can be
    poor enough that each step before the first window's end costs ten times the later
    ones (docs/performance.md), so it settles for none."""
    end, size = tune - 50, 25
    if tune < 150:
        settle, end = min(settle, int(0.15 * tune)), tune - int(0.1 * tune)
        size = end - settle
    windows, first = [], settle
    while first < end:
        last = first + size if first + 3 * size <= end else end
        windows.append((first, last))
        first, size = last, 2 * size
    return windows


class BlockPotential(QuadPotential):
    """A fixed mass matrix whose inverse (the posterior covariance) is dense over some
    coordinates and diagonal over the rest, optionally with a low-rank term across all of
    them.

    With R the root of the block + diagonal covariance (the block's Cholesky factor, the
    diagonal's sds) and `low_rank` = (U, values), U orthonormal columns in R's whitened
    coordinates, the covariance is R (I + U (diag(values) - I) U') R': a few directions
    that cross every coordinate (a smooth spatial pattern traded between two sets of area
    terms) stretched or shrunk by `values`, each step costing two products with U."""

    def __init__(self, dense: np.ndarray, block_cov: np.ndarray, variance: np.ndarray,
                 dtype=None, rng=None,
                 low_rank: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__(rng=rng)
        self.dtype = dtype or "float64"
        self._dense = np.asarray(dense, dtype=int)
        rest = np.ones(len(variance), dtype=bool)
        rest[self._dense] = False
        self._rest = np.flatnonzero(rest)
        self._n = len(variance)
        self._set_base(block_cov, variance)
        self._set_low_rank(low_rank)

    def _set_base(self, block_cov: np.ndarray, variance: np.ndarray) -> None:
        self._cov = np.asarray(block_cov, dtype=self.dtype)
        self._chol = linalg.cholesky(self._cov, lower=True) if len(self._dense) else \
            np.zeros((0, 0))
        self._full_variance = np.asarray(variance, dtype=self.dtype)
        self._var = self._full_variance[self._rest]
        self._sd = np.sqrt(self._var)

    def _set_low_rank(self, low_rank: tuple[np.ndarray, np.ndarray] | None) -> None:
        if low_rank is None or not len(low_rank[1]):
            self._vectors, self._values = np.zeros((self._n, 0)), np.zeros(0)
        else:
            self._vectors = np.asarray(low_rank[0], dtype=self.dtype)
            self._values = np.asarray(low_rank[1], dtype=self.dtype)

    @property
    def rank(self) -> int:
        """The number of directions in the low-rank term."""
        return len(self._values)

    def stats(self) -> dict[str, float]:
        """The low-rank term's largest and smallest variance (relative to the block +
        diagonal; NaN without one), in the slots PyMC's NUTS keeps for a mass matrix's
        eigenvalues."""
        if not self.rank:
            return {"largest_eigval": np.nan, "smallest_eigval": np.nan}
        return {"largest_eigval": float(self._values.max()),
                "smallest_eigval": float(self._values.min())}

    def whiten(self, x: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of points and of gradients in R's whitened coordinates: R^-1 x and R' g."""
        xs, gs = np.empty_like(x, dtype=float), np.empty_like(grad, dtype=float)
        if len(self._dense):
            xs[:, self._dense] = linalg.solve_triangular(self._chol, x[:, self._dense].T,
                                                         lower=True).T
            gs[:, self._dense] = grad[:, self._dense] @ self._chol
        xs[:, self._rest] = x[:, self._rest] / self._sd
        gs[:, self._rest] = grad[:, self._rest] * self._sd
        return xs, gs

    def velocity(self, x, out=None):
        if out is None:
            out = np.empty_like(x)
        if not self.rank:
            out[self._dense] = self._cov @ x[self._dense]
            out[self._rest] = self._var * x[self._rest]
            return out
        y = np.empty_like(x)  # R' x, stretched along U, then R
        y[self._dense] = self._chol.T @ x[self._dense]
        y[self._rest] = self._sd * x[self._rest]
        y += self._vectors @ ((self._values - 1.0) * (self._vectors.T @ y))
        out[self._dense] = self._chol @ y[self._dense]
        out[self._rest] = self._sd * y[self._rest]
        return out

    def momentum(self, z: np.ndarray) -> np.ndarray:
        """The momentum for a standard normal vector z: R'^-1 (I + U (values^-1/2 - 1) U') z,
        distributed N(0, M) with M the inverse of the covariance."""
        if self.rank:
            z = z + self._vectors @ ((self._values ** -0.5 - 1.0) * (self._vectors.T @ z))
        out = np.empty_like(z)
        if len(self._dense):
            out[self._dense] = linalg.solve_triangular(self._chol.T, z[self._dense])
        out[self._rest] = z[self._rest] / self._sd
        return out

    def random(self):
        return self.momentum(self.rng.normal(size=self._n).astype(self.dtype))

    def energy(self, x, velocity=None):
        if velocity is None:
            velocity = self.velocity(x)
        return 0.5 * np.dot(x, velocity)

    def velocity_energy(self, x, v_out):
        self.velocity(x, out=v_out)
        return self.energy(x, v_out)

    __call__ = random


class AdaptiveBlockPotential(BlockPotential):
    """A block potential that re-estimates its matrix while tuning: at the end of each of
    `adaptation_windows(tune)` from that window's draws and their gradients
    (`draws_and_gradients_estimate`), blended with the estimate before it as if that were
    `prior_draws` draws, and, from a window of at least `low_rank_draws` draws, the
    directions across all coordinates in which its draws and gradients say that matrix is
    off by more than `low_rank_cutoff` (`low_rank_estimate`; None: never). Fixed after
    tuning, as NUTS needs."""

    def __init__(self, dense: np.ndarray, block_cov: np.ndarray, variance: np.ndarray,
                 tune: int, prior_draws: int = 10, dtype=None, rng=None,
                 low_rank_cutoff: float | None = LOW_RANK_CUTOFF, low_rank_draws: int = 100):
        super().__init__(dense, block_cov, variance, dtype=dtype, rng=rng)
        self._start = (np.array(block_cov, dtype=float), np.array(variance, dtype=float))
        self._windows = adaptation_windows(tune)
        self._prior_draws = prior_draws
        self._low_rank = (low_rank_cutoff, low_rank_draws)
        self.reset()

    def reset(self) -> None:
        self._set_base(*self._start)
        self._set_low_rank(None)
        self._step = 0
        self._window: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, sample, grad, tune) -> None:
        if not tune:
            return
        step, self._step = self._step, self._step + 1
        for first, last in self._windows:
            if first <= step < last:
                self._window.append((np.array(sample, dtype=float),
                                     np.array(grad, dtype=float)))
                if step == last - 1:
                    draws, grads = (np.array(v) for v in zip(*self._window, strict=True))
                    self._adapt(draws, grads)
                    self._window = []

    def _adapt(self, draws: np.ndarray, grads: np.ndarray) -> None:
        n, w = len(draws), self._prior_draws
        block, variance = draws_and_gradients_estimate(draws, grads, self._dense)
        self._set_base((n * block + w * self._cov) / (n + w),
                       (n * variance + w * self._full_variance) / (n + w))
        cutoff, enough = self._low_rank
        self._set_low_rank(None if cutoff is None or n < enough else
                           low_rank_estimate(*self.whiten(draws, grads), cutoff=cutoff))


def draws_and_gradients_estimate(draws: np.ndarray, grads: np.ndarray, dense: np.ndarray
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """The posterior covariance a window of draws and their log density's gradients point
    to, as nutpie's adaptation estimates it: per coordinate sqrt(var(draws) / var(grads)),
    and over the dense block the matrix S with S cov(grads) S = cov(draws) (the geometric
    mean of cov(draws) and cov(grads)^-1), each covariance first shrunk towards its
    diagonal by d / (n + d) for d coordinates and n draws. For a Gaussian neither depends
    on how much of it the window explored (each coordinate's lies between its variance
    given the others and its marginal variance, and is exact for one tied to none): a
    chain that moved over a tenth of a coordinate's width sees a tenth of its sd in the
    draws and ten times its precision's root in the gradients. So a narrow starting
    matrix is corrected in one window, where the draws alone would widen it only as far
    as the chain went (docs/performance.md)."""
    spread, pull = draws.var(axis=0), grads.var(axis=0)
    usable = (spread > 0) & (pull > 0)
    variance = np.where(usable, np.sqrt(spread / np.where(usable, pull, 1.0)), spread)
    if not len(dense):
        return np.zeros((0, 0)), variance
    scale = np.sqrt(np.maximum(variance[dense], 1e-12))
    n, d = len(draws), len(dense)

    def shrunk(values: np.ndarray, factor: np.ndarray) -> np.ndarray:
        cov = np.cov(values[:, dense].T).reshape(d, d) * factor
        return (n * cov + d * np.diag(np.diag(cov))) / (n + d)

    within = shrunk(draws, 1.0 / np.outer(scale, scale))
    across = shrunk(grads, np.outer(scale, scale))
    return _geometric_mean(within, across) * np.outer(scale, scale), variance


def _geometric_mean(within: np.ndarray, across: np.ndarray) -> np.ndarray:
    """The positive-definite S with S `across` S = `within`: the geometric mean of the
    draws' covariance and the inverse of the gradients' covariance."""
    values, vectors = linalg.eigh(within)
    root = (vectors * np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    values, vectors = linalg.eigh(root @ across @ root)
    middle = (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T
    return root @ middle @ root


def low_rank_estimate(draws: np.ndarray, grads: np.ndarray, cutoff: float = 2.0,
                      gamma: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Directions and their variances where a window's draws and gradients (rows, in
    coordinates whitened by the current mass matrix) say the posterior is wider or
    narrower than that matrix, as nutpie's low-rank adaptation finds them: in the span of
    the centred draws and gradients, the matrix S with S cov(grads) S = cov(draws), each
    covariance regularised by gamma x n times the identity, and of S's eigenvectors those
    whose eigenvalue lies outside [1 / cutoff, cutoff]. For a Gaussian, from at least as
    many draws as coordinates, S is its covariance (each gradient is minus the precision
    times its draw), so every direction off by more than the cutoff is found. From fewer
    (a 1,000-area window has 275 draws over 3,032 coordinates) the span holds the long
    directions, which dominate the draws, but not all that the matrix got wrong
    (tests/test_pathfinder.py)."""
    n = len(draws)
    spread = (draws - draws.mean(axis=0)).T / n
    pull = (grads - grads.mean(axis=0)).T / n
    basis, _ = np.linalg.qr(np.hstack([np.linalg.svd(spread, full_matrices=False)[0],
                                       np.linalg.svd(pull, full_matrices=False)[0]]))
    a, b = basis.T @ spread, basis.T @ pull
    values, vectors = linalg.eigh(_geometric_mean(a @ a.T / gamma + np.eye(len(a)),
                                                  b @ b.T / gamma + np.eye(len(b))))
    keep = (values > cutoff) | (values < 1.0 / cutoff)
    return basis @ vectors[:, keep], values[keep]
