"""BYM2 scaling factors against an independent dense computation, islands included."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial import Delaunay

from gapmodel.graph import Graph, component_scaling


def dense_scaling(n: int, edges: list[tuple[int, int]]) -> float:
    """Riebler et al. (2016): geometric mean of the marginal variances of the ICAR under
    the sum-to-zero constraint, via the Moore-Penrose inverse of the Laplacian."""
    w = np.zeros((n, n))
    for i, j in edges:
        w[i, j] = w[j, i] = 1
    q = np.diag(w.sum(1)) - w
    return float(np.exp(np.mean(np.log(np.diag(np.linalg.pinv(q))))))


def test_path_and_cycle_graphs():
    path = [(i, i + 1) for i in range(9)]
    g = Graph.from_edges(10, np.array(path))
    assert np.allclose(g.scaling_factors(), dense_scaling(10, path))
    cycle = [*path, (9, 0)]
    g = Graph.from_edges(10, np.array(cycle))
    assert np.allclose(g.scaling_factors(), dense_scaling(10, cycle))


def test_each_component_is_scaled_on_its_own_and_islands_get_none():
    a = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]  # 4 nodes
    b = [(4, 5), (5, 6)]  # a path of 3
    g = Graph.from_edges(8, np.array(a + b))  # node 7 is an island
    assert list(g.sizes[g.component]) == [4, 4, 4, 4, 3, 3, 3, 1]
    assert g.isolated.tolist() == [False] * 7 + [True]
    factors = g.scaling_factors()
    assert np.allclose(factors[:4], dense_scaling(4, a))
    shifted = [(i - 4, j - 4) for i, j in b]
    assert np.allclose(factors[4:7], dense_scaling(3, shifted))
    assert np.isnan(factors[7])


def test_sparse_solves_agree_with_dense_on_a_planar_graph():
    rng = np.random.default_rng(3)
    points = rng.random((300, 2))
    edges = set()
    for simplex in Delaunay(points).simplices:
        for i in range(3):
            for j in range(i + 1, 3):
                edges.add(tuple(sorted((int(simplex[i]), int(simplex[j])))))
    edges = sorted(edges)
    exact = dense_scaling(300, edges)
    q = Graph.from_edges(300, np.array(edges)).laplacian()
    assert component_scaling(q) == pytest.approx(exact, rel=1e-8)
    sparse = component_scaling(sp.csc_matrix(q), dense_limit=10)  # selected inversion
    assert sparse == pytest.approx(exact, rel=1e-8)


def test_self_loops_are_refused():
    with pytest.raises(ValueError, match="self-loops"):
        Graph.from_edges(3, np.array([[0, 1], [2, 2]]))
