"""The sparse BYM2 pieces against dense linear algebra: L(c) against the Laplacian's
spectrum, and p(d, c) with its gradient against solves with Q + cI."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from gapmodel.graph import Graph
from gapmodel.shifted_laplacian import LOG_C_RANGE, RTOL, ShiftedLaplacian


def grid_graph(rows: int, cols: int) -> Graph:
    """A rows x cols lattice with its diagonals one way: triangles, like a map."""
    index = np.arange(rows * cols).reshape(rows, cols)
    edges = np.concatenate([
        np.column_stack([index[:, :-1].ravel(), index[:, 1:].ravel()]),
        np.column_stack([index[:-1, :].ravel(), index[1:, :].ravel()]),
        np.column_stack([index[:-1, :-1].ravel(), index[1:, 1:].ravel()]),
    ])
    return Graph.from_edges(rows * cols, edges)


@pytest.fixture(scope="module")
def lattice():
    q = grid_graph(15, 20).laplacian()
    eigenvalues = np.linalg.eigvalsh(q.toarray())
    assert eigenvalues[0] < 1e-9 < eigenvalues[1]  # one component
    return q, eigenvalues[1:], ShiftedLaplacian.from_laplacian(q)


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_COMPILE"])
def test_log_det_matches_the_spectrum(lattice, mode: str) -> None:
    _, eigenvalues, shifted = lattice
    c = pt.dscalar("c")
    value = shifted.log_det(c)
    f = pytensor.function([c], [value, pytensor.grad(value, c)], mode=mode)
    lo, hi = np.exp(LOG_C_RANGE)
    # inside the interpolated range, at its ends and along the asymptotic series above it
    for point in (lo, 3e-7, 1e-3, 0.05, 0.9, 4.0, 60.0, 2e3, hi, 10 * hi, 1e12):
        exact = np.log1p(eigenvalues / point).sum()
        slope = -(eigenvalues / (point * (eigenvalues + point))).sum()
        got, got_slope = f(point)
        assert abs(got - exact) <= 1e-10 * exact + 1e-8, point
        assert abs(got_slope - slope) <= 1e-7 * abs(slope) + 1e-9, point
    # below the range the log-determinant of Q + cI is held: off by at most c tr(Q^+)
    for point in (lo / 10, lo / 1e4):
        exact = np.log1p(eigenvalues / point).sum()
        assert abs(f(point)[0] - exact) <= lo * (1 / eigenvalues).sum()


@pytest.mark.parametrize("mode", ["NUMBA", "FAST_COMPILE"])
def test_quadratic_and_its_gradient_match_dense_solves(lattice, mode: str) -> None:
    q, eigenvalues, shifted = lattice
    dense = q.toarray()
    rng = np.random.default_rng(7)
    d_value = rng.standard_normal(q.shape[0])
    d_value -= d_value.mean()
    d, c = pt.dvector("d"), pt.dscalar("c")
    p = shifted.quadratic(d, c)
    f = pytensor.function([d, c], [p, *pytensor.grad(p, [d, c])], mode=mode)
    top, bottom = eigenvalues[-1], eigenvalues[0]
    for c_value in (1e-5, 0.3, 4.0, 250.0, 1e7):
        x = np.linalg.solve(dense + c_value * np.eye(len(dense)), d_value)
        qx = dense @ x
        got, grad_d, grad_c = f(d_value, c_value)
        # p's error is the square of the solve's: exact to rounding at any tolerance
        assert got == pytest.approx(c_value * d_value @ qx, rel=1e-9)
        # the gradient's is linear in the solve's, |x error| <= RTOL |d| / (c + lambda_1)
        bound = top * RTOL * np.linalg.norm(d_value) / (c_value + bottom)
        assert np.linalg.norm(grad_d - 2 * c_value * qx) <= 2 * c_value * bound
        assert abs(grad_c - qx @ qx) <= 2 * np.linalg.norm(qx) * bound + 1e-12 * (qx @ qx)
    # the limits: p -> c d'd as c -> 0 (d has sum zero) and p -> d'Qd as c -> infinity
    assert f(d_value, 1e-9)[0] == pytest.approx(1e-9 * d_value @ d_value, rel=1e-3)
    assert f(d_value, 1e12)[0] == pytest.approx(d_value @ dense @ d_value, rel=1e-9)


def test_the_laplacian_enters_the_compiled_function_at_run_time(lattice) -> None:
    """Q's arrays as constants of the numba-compiled graph made each solve 2.5 times
    slower; they must reach the solve as the function's run-time inputs."""
    shifted = lattice[2]
    d = pt.dvector("d")
    value = shifted.quadratic(d, 2.0)
    f = pytensor.function([d], [value, pytensor.grad(value, d)], mode="NUMBA")
    solves = [node for node in f.maker.fgraph.apply_nodes
              if type(node.op).__name__ == "ShiftedQuadratic"]
    assert len(solves) == 1
    arrays = solves[0].inputs[:4]
    assert all(isinstance(v, pytensor.compile.SharedVariable) or v in f.maker.fgraph.inputs
               for v in arrays)
    assert not any(isinstance(v, pt.TensorConstant) for v in arrays)
