"""The centred BYM2 density of one large connected component, in sparse form.

Over a component's non-constant directions d (sum zero), the BYM2 prior of Riebler et al.
(2016) has covariance sigma^2 [(1 - rho) I + rho Q^+ / s], Q the component's ICAR
Laplacian and s its scaling factor. With c = rho / (s (1 - rho)) its log density is,
up to a constant,

    -s p(d, c) / (2 sigma^2 rho) - (n - 1) log(sigma^2 rho / s) / 2 - L(c) / 2,

    p(d, c) = c d'Q (Q + cI)^{-1} d,    L(c) = sum over Q's nonzero eigenvalues of
                                                log(1 + lambda / c),

the same density as the Laplacian eigenbasis gives (`gapmodel.model._bym2_marginal`),
without the dense n x n basis. p comes from a conjugate-gradient solve with Q + cI
(Jacobi-preconditioned, compiled with numba; Q + cI is well conditioned where the data
pin u, c of order 1 and more) and its derivatives from the same solve. L is one smooth
function of one number: it is interpolated in log c by a Chebyshev series through exact
sparse log-determinants, with its asymptotic series above the interpolated range and the
log-determinant of Q + cI held at its last value below it (rho under about 1e-9; an error
under 1e-3 in the log density there at 33,000 areas).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
import scipy.sparse as sp
from numpy.polynomial import chebyshev
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch import basic as numba_basic
from scipy.sparse.linalg import splu

#: Interpolated range of log c: below it rho is under about 1e-9 for any scaling factor
#: of a planar graph; above it L's asymptotic series has converged to 1e-9.
LOG_C_RANGE = (-20.0, 10.0)
#: Chebyshev nodes through which L is interpolated (exact sparse log-determinants).
NODES = 96
#: Conjugate gradients stop at this residual relative to the right-hand side.
RTOL = 1e-6


@dataclass(frozen=True, eq=False)
class ShiftedLaplacian:
    """A connected component's Laplacian Q (CSR) and L(c) as a Chebyshev series in log c."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    diagonal: np.ndarray
    coefficients: np.ndarray  # Chebyshev series of L over LOG_C_RANGE
    moments: tuple[float, float, float]  # tr Q, tr Q^2, tr Q^3

    @property
    def n(self) -> int:
        return len(self.diagonal)

    @classmethod
    def from_laplacian(cls, q: sp.spmatrix, nodes: int = NODES) -> ShiftedLaplacian:
        q = sp.csr_matrix(q, dtype=float)
        q.sort_indices()
        lo, hi = LOG_C_RANGE
        x = np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)
        log_c = lo + (x + 1.0) * (hi - lo) / 2.0
        values = np.array([_log_det_shifted(q, float(np.exp(t))) for t in log_c])
        values -= q.shape[0] * log_c  # L(c) = log det(Q + cI) - log c - (n - 1) log c
        q2 = q @ q
        moments = (float(q.diagonal().sum()), float(q2.diagonal().sum()),
                   float((q2.multiply(q.T)).sum()))
        return cls(indptr=q.indptr.astype(np.int64), indices=q.indices.astype(np.int64),
                   data=q.data.copy(), diagonal=q.diagonal().copy(),
                   coefficients=chebyshev.chebfit(x, values, nodes - 1), moments=moments)

    def log_det(self, c) -> pt.TensorVariable:
        """L(c) = sum log(1 + lambda / c) over Q's nonzero eigenvalues (c > 0)."""
        lo, hi = LOG_C_RANGE
        t = pt.log(c)
        x = pt.clip(2.0 * (t - lo) / (hi - lo) - 1.0, -1.0 + 1e-12, 1.0 - 1e-12)
        degree = np.arange(len(self.coefficients))
        inside = pt.dot(self.coefficients, pt.cos(degree * pt.arccos(x)))
        m1, m2, m3 = self.moments
        top = np.exp(hi)
        series = lambda v: m1 / v - m2 / (2 * v**2) + m3 / (3 * v**3)  # noqa: E731
        edge = chebyshev.chebval(1.0, self.coefficients) - series(top)
        above = series(pt.maximum(c, top)) + edge
        below = chebyshev.chebval(-1.0, self.coefficients) - (self.n - 1) * (t - lo)
        return pt.switch(t >= hi, above, pt.switch(t <= lo, below, inside))

    def quadratic(self, d, c) -> pt.TensorVariable:
        """p(d, c) = c d'Q (Q + cI)^{-1} d for d of sum zero.

        Q's arrays enter the graph as shared variables, which the compiled function takes
        at run time: as constants of the numba-compiled graph they made each solve 2.5
        times slower (24 against 9 ms at 33,000 areas)."""
        arrays = (self.indptr, self.indices, self.data, self.diagonal)
        return SHIFTED_QUADRATIC(*map(pytensor.shared, arrays), d,
                                 pt.as_tensor(c, dtype="float64"))[0]


def _log_det_shifted(q: sp.csr_matrix, c: float) -> float:
    """log det(Q + cI) by a sparse LU factorisation without pivoting (Q + cI is SPD)."""
    a = (q + c * sp.identity(q.shape[0], format="csr")).tocsc()
    lu = splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
              options={"SymmetricMode": True})
    diagonal = lu.U.diagonal()
    if (diagonal <= 0).any():
        raise RuntimeError("Q + cI did not factorise as positive definite")
    return float(np.log(diagonal).sum())


@numba.njit(cache=True, nogil=True)
def shifted_solve(indptr, indices, data, diagonal, c, b, rtol=RTOL):  # pragma: no cover
    """x with (Q + cI) x = b by Jacobi-preconditioned conjugate gradients (loops fused:
    one pass over Q and two over the vectors a step)."""
    n = len(b)
    x = np.zeros(n)
    if not 0.0 < c < np.inf or not np.isfinite(b).all():
        return x + np.nan  # a NaN density, which the sampler rejects, in no time
    r = b.copy()
    scale = 1.0 / (diagonal + c)
    p = r * scale
    ap = np.empty(n)
    rz = np.dot(r, p)
    limit = (rtol * np.sqrt(np.dot(b, b))) ** 2
    for _ in range(20 * n):
        pap = 0.0
        for i in range(n):
            acc = c * p[i]
            for k in range(indptr[i], indptr[i + 1]):
                acc += data[k] * p[indices[k]]
            ap[i] = acc
            pap += p[i] * acc
        if not pap > 0.0:  # converged to zero, or lost to rounding
            break
        alpha = rz / pap
        rr = 0.0
        rz_next = 0.0
        for i in range(n):
            x[i] += alpha * p[i]
            r[i] -= alpha * ap[i]
            rr += r[i] * r[i]
            rz_next += r[i] * r[i] * scale[i]
        if rr <= limit:
            break
        beta = rz_next / rz
        rz = rz_next
        for i in range(n):
            p[i] = r[i] * scale[i] + beta * p[i]
    return x


@numba.njit(cache=True, nogil=True)
def _shifted_product(indptr, indices, data, c, v, out):  # pragma: no cover - compiled
    for i in range(len(v)):
        acc = c * v[i]
        for k in range(indptr[i], indptr[i + 1]):
            acc += data[k] * v[indices[k]]
        out[i] = acc


@numba.njit(cache=True, nogil=True)
def shifted_quadratic(indptr, indices, data, diagonal, d, c):  # pragma: no cover
    """p = c d'Q (Q + cI)^{-1} d and g = c Q (Q + cI)^{-1} d (so dp/dd = 2 g and
    dp/dc = g'g / c^2).

    With x the solve, p = c d'd - c^2 d'x: conjugate gradients minimise the error in
    Q + cI's norm, so d'x is off by e'(Q + cI)e, the square of the solve's error, and a
    loose tolerance (RTOL) leaves p exact to about 1e-12. g is off by about RTOL relative.
    Above c = 100 (rho near 1) that form cancels, and p = d'g instead, solved to 1e-13
    (Q + cI is then near a multiple of I: a few steps)."""
    large = c > 100.0
    x = shifted_solve(indptr, indices, data, diagonal, c, d, 1e-13 if large else RTOL)
    g = np.empty(len(d))
    _shifted_product(indptr, indices, data, 0.0, x, g)
    g *= c
    p = np.dot(d, g) if large else c * np.dot(d, d) - c * c * np.dot(d, x)
    return p, g


class ShiftedQuadratic(Op):
    """(p, g) = shifted_quadratic(Q's CSR arrays, d, c); differentiable in d and c
    through p (g is p's gradient direction, not itself differentiable)."""

    __props__ = ()

    def make_node(self, indptr, indices, data, diagonal, d, c):
        inputs = [pt.as_tensor(v) for v in (indptr, indices, data, diagonal, d, c)]
        return Apply(self, inputs, [pt.dscalar(), pt.dvector()])

    def perform(self, node, inputs, outputs):
        indptr, indices, data, diagonal, d, c = inputs
        p, g = shifted_quadratic(indptr, indices, data, diagonal, d, float(c))
        outputs[0][0] = np.asarray(p)
        outputs[1][0] = g

    def connection_pattern(self, node):
        return [[False, False]] * 4 + [[True, False], [True, False]]

    def pullback(self, inputs, outputs, cotangents):
        if not isinstance(cotangents[1].type, DisconnectedType):
            raise NotImplementedError("g is a gradient direction, not differentiable")
        c, (_, g), grad = inputs[5], outputs, cotangents[0]
        disconnected = [DisconnectedType()() for _ in range(4)]
        return [*disconnected, 2.0 * grad * g, grad * pt.dot(g, g) / c**2]


SHIFTED_QUADRATIC = ShiftedQuadratic()


@numba_basic.register_funcify_default_op_cache_key(ShiftedQuadratic)
def _numba_shifted_quadratic(op, node, **kwargs):
    @numba_basic.numba_njit
    def quadratic(indptr, indices, data, diagonal, d, c):
        p, g = shifted_quadratic(indptr, indices, data, diagonal, d, c.item())
        return np.asarray(p), g

    return quadratic, 1
