"""Gaussians with a known covariance for the mass-matrix tests, and how far a potential's
matrix leaves one from round."""

from __future__ import annotations

import numpy as np

from gapmodel.warmstart import BlockPotential


def factor_gaussian(rng: np.random.Generator, d: int = 60, strength: float = 50.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """A covariance over d coordinates, the first 4 a dense block, with one direction
    across the other d - 4 (a common factor) `strength` + 1 times longer than the rest."""
    factor = rng.normal(size=d)
    factor[:4] = 0.0
    factor /= np.linalg.norm(factor)
    scale = np.exp(rng.normal(size=d))
    cov = np.eye(d) + strength * np.outer(factor, factor)
    cov[:4, :4] += 0.5
    return np.arange(4), cov * np.outer(scale, scale)


def spread(potential: BlockPotential, cov: np.ndarray) -> float:
    """sqrt(largest / smallest eigenvalue) of the covariance under the potential's mass
    matrix: about the leapfrog steps a draw needs."""
    matrix = np.column_stack([potential.velocity(e) for e in np.eye(len(cov))])
    values = np.linalg.eigvals(np.linalg.solve(matrix, cov)).real
    return float(np.sqrt(values.max() / values.min()))
