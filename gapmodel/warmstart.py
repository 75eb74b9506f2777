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
draws and would make every leapfrog step cost as much as a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pymc.step_methods.hmc.quadpotential import QuadPotential
from scipy import linalg

#: Variables up to this many coordinates join the dense block of the mass matrix...
DENSE_VARIABLE_SIZE = 32
#: ...which holds at most this many coordinates (further small variables are diagonal).
DENSE_BLOCK_LIMIT = 256


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

    def potential(self, rng=None) -> BlockPotential:
        return BlockPotential(self.dense, self.block_cov, self.variance, rng=rng)

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


def warm_start(model: pm.Model, posterior: xr.Dataset, source: str) -> WarmStart:
    """The mass matrix and starting points for `model` from `posterior`, the draws of an
    earlier fit of the same spec; WarmStartError if the two do not match."""
    draws = unconstrained_draws(model, posterior)
    sizes = [d.shape[1] for d in draws.values()]
    flat = np.concatenate(list(draws.values()), axis=1)
    n = flat.shape[0]
    if n < 100:
        raise WarmStartError(f"the earlier posterior has only {n} draws (needs 100)")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    dense: list[int] = []
    for k, size in enumerate(sizes):
        if size <= DENSE_VARIABLE_SIZE and len(dense) + size <= DENSE_BLOCK_LIMIT:
            dense += range(offsets[k], offsets[k + 1])
    index = np.array(dense, dtype=int)
    variance = flat.var(axis=0)
    if not np.all(np.isfinite(variance)) or variance.min() <= 0:
        raise WarmStartError("the earlier posterior has a coordinate that does not vary")
    # Stan's regularisation of an estimated mass matrix: shrink towards a small diagonal
    block = np.cov(flat[:, index].T).reshape(len(index), len(index))
    block = (n / (n + 5.0)) * block + 1e-3 * (5.0 / (n + 5.0)) * np.eye(len(index))
    chains = posterior.sizes["chain"]
    points = [{rv.name: posterior[rv.name].values[c, -1] for rv in model.free_RVs}
              for c in range(chains)]
    return WarmStart(source=source, dense=index, block_cov=block, variance=variance,
                     points=points)


class BlockPotential(QuadPotential):
    """A fixed mass matrix whose inverse (the posterior covariance) is dense over some
    coordinates and diagonal over the rest."""

    def __init__(self, dense: np.ndarray, block_cov: np.ndarray, variance: np.ndarray,
                 dtype=None, rng=None):
        super().__init__(rng=rng)
        self.dtype = dtype or "float64"
        self._dense = np.asarray(dense, dtype=int)
        rest = np.ones(len(variance), dtype=bool)
        rest[self._dense] = False
        self._rest = np.flatnonzero(rest)
        self._cov = np.asarray(block_cov, dtype=self.dtype)
        self._chol = linalg.cholesky(self._cov, lower=True) if len(self._dense) else \
            np.zeros((0, 0))
        self._var = np.asarray(variance, dtype=self.dtype)[self._rest]
        self._n = len(variance)

    def velocity(self, x, out=None):
        if out is None:
            out = np.empty_like(x)
        out[self._dense] = self._cov @ x[self._dense]
        out[self._rest] = self._var * x[self._rest]
        return out

    def random(self):
        vals = self.rng.normal(size=self._n).astype(self.dtype)
        out = np.empty_like(vals)
        if len(self._dense):
            out[self._dense] = linalg.solve_triangular(self._chol.T, vals[self._dense])
        out[self._rest] = vals[self._rest] / np.sqrt(self._var)
        return out

    def energy(self, x, velocity=None):
        if velocity is None:
            velocity = self.velocity(x)
        return 0.5 * np.dot(x, velocity)

    def velocity_energy(self, x, v_out):
        self.velocity(x, out=v_out)
        return self.energy(x, v_out)

    __call__ = random
