"""Pathfinder: a Gaussian approximation of a posterior from one L-BFGS path.

Zhang, Carpenter, Gelman and Vehtari (2022), "Pathfinder: parallel quasi-Newton
variational inference", JMLR 23(306). L-BFGS climbs the log density from a starting point;
at each iterate its last few position and gradient differences give an inverse-Hessian
estimate (a diagonal plus a low-rank term), hence a normal approximation N(mean, cov)
around the iterate's Newton step. The approximation with the highest evidence lower bound
(ELBO, estimated from a few draws) is returned. Unlike the mode's own Laplace
approximation it stops where the path best matches the posterior's bulk, before a
hierarchical scale collapses towards zero or a stiff ridge is climbed to its crest; a
fit uses it for starting points and a first mass matrix (`gapmodel.warmstart`).

Everything here is numpy on a compiled log density and gradient, so it adds no
compilation of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import linalg, optimize

LogpGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]


class PathfinderError(RuntimeError):
    """L-BFGS found no step along which an approximation could be formed."""


@dataclass(frozen=True)
class Approximation:
    """N(mean, cov) with cov = diag(alpha) + beta gamma beta', kept in factored form:
    A^(1/2) (I + Q (L L' - I) Q') A^(1/2), where A = diag(alpha) and Q R is the thin QR of
    A^(-1/2) beta, L the Cholesky factor of I + R gamma R'."""

    mean: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    q: np.ndarray
    chol: np.ndarray
    logdet: float
    iteration: int  # the L-BFGS iterate it was formed at
    elbo: float = np.nan  # the ELBO estimate that chose it
    iterations: int = 0  # of the whole path
    evaluations: int = 0  # log density and gradient calls, ELBO draws included

    @classmethod
    def at(cls, x: np.ndarray, grad: np.ndarray, alpha: np.ndarray, s: np.ndarray,
           z: np.ndarray, iteration: int) -> Approximation:
        """The approximation at iterate `x` (log-density gradient `grad`) from the diagonal
        estimate `alpha` and the last position and (negative log density) gradient
        differences, the columns of `s` and `z` (Zhang et al., Algorithms 3 and 4)."""
        j = s.shape[1]
        e = np.triu(s.T @ z) + 1e-8 * np.eye(j)
        e_inv = linalg.solve_triangular(e, np.eye(j), lower=False)
        beta = np.concatenate([alpha[:, None] * z, s], axis=1)
        inner = e_inv.T @ (np.diag(np.diag(e)) + z.T @ (alpha[:, None] * z)) @ e_inv
        gamma = np.block([[np.zeros((j, j)), -e_inv], [-e_inv.T, inner]])
        q, r = np.linalg.qr(beta / np.sqrt(alpha)[:, None])
        chol = linalg.cholesky(np.eye(len(r)) + r @ gamma @ r.T, lower=True)
        logdet = 2 * float(np.log(np.abs(np.diag(chol))).sum()) + float(np.log(alpha).sum())
        mean = x + alpha * grad + beta @ (gamma @ (beta.T @ grad))
        return cls(mean=mean, alpha=alpha, beta=beta, gamma=gamma, q=q, chol=chol,
                   logdet=logdet, iteration=iteration)

    def draw(self, normal: np.ndarray) -> np.ndarray:
        """Draws (rows) from the approximation, given standard normal rows `normal`."""
        correction = self.q @ ((self.chol - np.eye(len(self.chol))) @ (self.q.T @ normal.T))
        return self.mean + np.sqrt(self.alpha) * (correction.T + normal)

    def log_density(self, normal: np.ndarray) -> np.ndarray:
        """The approximation's log density at the draws made from `normal`."""
        n = normal.shape[1]
        return -0.5 * (self.logdet + (normal * normal).sum(axis=1) + n * np.log(2 * np.pi))

    def variance(self) -> np.ndarray:
        """The diagonal of the covariance."""
        ql = self.q @ self.chol
        return self.alpha * (1.0 + (ql * ql).sum(axis=1) - (self.q * self.q).sum(axis=1))

    def covariance(self, index: np.ndarray) -> np.ndarray:
        """The covariance's block over the coordinates `index`."""
        b = self.beta[index]
        return np.diag(self.alpha[index]) + b @ self.gamma @ b.T


def pathfinder(logp_grad: LogpGrad, start: np.ndarray, rng: np.random.Generator, *,
               history: int = 6, elbo_draws: int = 10, candidates: int = 100,
               maxiter: int = 1000) -> Approximation:
    """The best approximation along an L-BFGS path from `start` (the paper's single-path
    Pathfinder). `logp_grad(x)` returns the log density and its gradient; `history` is
    L-BFGS's memory, `elbo_draws` the draws behind each ELBO estimate, made at up to
    `candidates` iterates spread evenly along the path (the last always among them)."""
    points: list[tuple[np.ndarray, np.ndarray]] = []
    last: list = [None, None]  # the latest finite call's point and gradient
    calls = 0

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        calls += 1
        logp, grad = logp_grad(x)
        if not np.isfinite(logp):
            return np.inf, np.zeros_like(x)
        last[:] = [x.copy(), np.asarray(grad, dtype=float).copy()]
        return -float(logp), -last[1]

    def accepted(x: np.ndarray) -> None:
        if not np.array_equal(last[0], x):  # the line search's last call was elsewhere
            negative(x)
        points.append((last[0], last[1]))

    negative(np.asarray(start, dtype=float))
    if last[0] is None:
        raise PathfinderError("the log density is not finite at the starting point")
    points.append((last[0], last[1]))
    optimize.minimize(negative, start, jac=True, method="L-BFGS-B", callback=accepted,
                      options={"maxiter": maxiter, "maxcor": history})
    chosen = set(np.linspace(1, len(points) - 1, min(candidates, len(points) - 1))
                 .round().astype(int).tolist())
    alpha = np.ones(len(start))
    s_kept: list[np.ndarray] = []
    z_kept: list[np.ndarray] = []
    best: Approximation | None = None
    for i in range(1, len(points)):
        s = points[i][0] - points[i - 1][0]
        z = points[i - 1][1] - points[i][1]  # the gradient of -log density
        if s @ z > 1e-12 * (z @ z):  # curvature condition, else the pair is skipped
            alpha = _updated_diagonal(alpha, s, z)
            s_kept, z_kept = [*s_kept, s][-history:], [*z_kept, z][-history:]
        if i not in chosen or not s_kept:
            continue
        approx = Approximation.at(points[i][0], points[i][1], alpha,
                                  np.array(s_kept).T, np.array(z_kept).T, iteration=i)
        normal = rng.standard_normal((elbo_draws, len(start)))
        logp = np.array([logp_grad(x)[0] for x in approx.draw(normal)])
        calls += elbo_draws
        elbo = float(np.mean(logp - approx.log_density(normal))) \
            if np.all(np.isfinite(logp)) else -np.inf
        if best is None or elbo > best.elbo:
            best = replace(approx, elbo=elbo)
    if best is None or not np.isfinite(best.elbo):
        raise PathfinderError(f"no approximation along the path ({len(points) - 1} L-BFGS "
                              "iterations) has a finite ELBO")
    return replace(best, iterations=len(points) - 1, evaluations=calls)


def _updated_diagonal(alpha: np.ndarray, s: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The inverse Hessian's diagonal estimate after the pair (s, z) (Zhang et al., eq. 4);
    unchanged where the update would not stay positive and finite."""
    a, b, c = np.sum(alpha * z**2), s @ z, np.sum(s**2 / alpha)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        updated = 1.0 / (a / (b * alpha) + z**2 / b - a * s**2 / (b * c * alpha**2))
    return updated if np.all(np.isfinite(updated)) and np.all(updated > 0) else alpha
