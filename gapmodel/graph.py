"""Adjacency graphs for BYM2: components, isolated areas and ICAR scaling factors.

The ICAR precision of a connected component is Q = D - W. Its scaling factor is the
geometric mean of the marginal variances under the sum-to-zero constraint, i.e. of the
diagonal of the generalised inverse of Q (Riebler et al. 2016). Each connected component
is scaled on its own and isolated areas get no structured part (Freni-Sterrantino et al.
2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

#: Components up to this size are scaled exactly with a dense inverse.
DENSE_LIMIT = 3000


@dataclass(frozen=True)
class Graph:
    """An undirected graph over n areas with its connected components."""

    n: int
    edges: np.ndarray  # (E, 2) int, i < j, each edge once
    component: np.ndarray  # (n,) component label per area
    sizes: np.ndarray  # (n_components,) size per component

    @classmethod
    def from_edges(cls, n: int, edges: np.ndarray) -> Graph:
        edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        edges = np.sort(edges, axis=1)
        if len(edges) and (edges[:, 0] == edges[:, 1]).any():
            raise ValueError("self-loops are not allowed in an adjacency graph")
        edges = np.unique(edges, axis=0)
        adjacency = cls._adjacency(n, edges)
        _, labels = connected_components(adjacency, directed=False)
        sizes = np.bincount(labels)
        return cls(n=n, edges=edges, component=labels, sizes=sizes)

    @staticmethod
    def _adjacency(n: int, edges: np.ndarray) -> sp.csr_matrix:
        data = np.ones(2 * len(edges))
        rows = np.concatenate([edges[:, 0], edges[:, 1]])
        cols = np.concatenate([edges[:, 1], edges[:, 0]])
        return sp.csr_matrix((data, (rows, cols)), shape=(n, n))

    @property
    def isolated(self) -> np.ndarray:
        """Boolean mask of areas with no neighbours."""
        return self.sizes[self.component] == 1

    def laplacian(self) -> sp.csr_matrix:
        adjacency = self._adjacency(self.n, self.edges)
        degree = np.asarray(adjacency.sum(axis=1)).ravel()
        return (sp.diags(degree) - adjacency).tocsr()

    def scaling_factors(self, probes: int = 400, seed: int = 0) -> np.ndarray:
        """Per-area ICAR scaling factor of its component (NaN for isolated areas)."""
        out = np.full(self.n, np.nan)
        q = self.laplacian().tocsc()
        for label, size in enumerate(self.sizes):
            if size < 2:
                continue
            members = np.flatnonzero(self.component == label)
            block = q[members][:, members]
            out[members] = component_scaling(block, probes=probes, seed=seed)
        return out


def component_scaling(q: sp.spmatrix, probes: int = 400, seed: int = 0,
                      dense_limit: int = DENSE_LIMIT) -> float:
    """Geometric mean of diag(Q^+) for the Laplacian Q of one connected component.

    Exact (dense: Q^+ = (Q + 11'/n)^{-1} - 11'/n) up to `dense_limit` nodes. Above it,
    Q^+ = P A^{-1} P with A = Q + e_0 e_0' (sparse, invertible) and P the projection
    removing the mean, and the diagonal is estimated with Rademacher probes through one
    sparse LU factorisation.
    """
    n = q.shape[0]
    if n <= dense_limit:
        dense = q.toarray() + 1.0 / n
        diag = np.diag(np.linalg.inv(dense)) - 1.0 / n
        return float(np.exp(np.mean(np.log(diag))))
    pin = sp.csc_matrix(([1.0], ([0], [0])), shape=(n, n))
    lu = splu((q + pin).tocsc())
    rng = np.random.default_rng(seed)
    acc = np.zeros(n)
    for _ in range(probes):
        v = rng.choice([-1.0, 1.0], size=n)
        x = lu.solve(v - v.mean())
        acc += v * (x - x.mean())
    diag = np.clip(acc / probes, 1e-12, None)
    return float(np.exp(np.mean(np.log(diag))))
