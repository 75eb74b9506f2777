"""The Laplace collapse of per-area effects for binomial area totals, as compiled loops.

Where each area has one register total, an exact binomial count of its cells' expected
recorded cases,

    R_a ~ Binomial(n_a, mu_a / n_a),  mu_a = sum_c w_c expit(g_c + u_a),  u_a ~ N(m_a, s_a^2),

the Laplace approximation of the marginal over u_a (`gapmodel.model.laplace_collapse`) needs
only mu_a and its first three derivatives in u_a, each a sum over the area's cells. Written
out here as loops over the cells (numba), the Newton steps and the formula take a few passes
over the cells, where PyTensor's graph of the same (derivatives of derivatives, then its
reverse pass) keeps dozens of cell-sized temporaries. Each area takes Newton steps until
one is under `TOLERANCE`: three or four where the graph takes the spec's `newton_steps`
everywhere, more only where an area starts far from its mode.

The gradient is the implicit one: at the mode u*, du*/dx = (d f'/dx) / H for any input x,
f the log joint in u and H = -f''; so the Newton steps are never differentiated, and the
derivative is that of the converged approximation, which the steps reach (the gate's
`laplace_error` checks it). The same holds for the modes u* themselves, which the model
uses again (the reference evidence's detection).
"""

from __future__ import annotations

import hashlib
import inspect
import math

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import (
    numba_njit,
    register_funcify_default_op_cache_key,
)
from scipy.special import gammaln

LOG_2PI = math.log(2.0 * math.pi)
#: A Newton step under this (logit units) ends an area's search: its term is then within
#: about H step^2 of the converged value, and the implicit gradient exact to about H step.
TOLERANCE = 1e-9
#: Steps of at most 1 from within 4 of the prior's mean reach any mode long before this.
MAX_STEPS = 50


#: the sums may be reordered (vectorised) and a / b taken as a * (1 / b): 10% off the
#: kernels on England's layout; no flag that assumes away infinities or NaN
@numba.njit(cache=False, fastmath={"reassoc", "contract", "arcp"})
def _moments(w, odds, order, start, stop, u, third):
    """mu = sum_c w_c e_c and its first two (three) u-derivatives, e_c = expit(g_c + u) =
    1 / (1 + exp(-g_c) exp(-u)): `odds` holds exp(-g_c), so that a pass over the cells takes
    one exponential per area, not per cell."""
    mu = m1 = m2 = m3 = 0.0
    scale = math.exp(-u)
    for i in range(start, stop):
        c = order[i]
        e = 1.0 / (1.0 + odds[c] * scale)
        s1 = e * (1.0 - e)
        mu += w[c] * e
        m1 += w[c] * s1
        m2 += w[c] * s1 * (1.0 - 2.0 * e)
        if third:
            m3 += w[c] * s1 * (1.0 - 6.0 * s1)
    return mu, m1, m2, m3


@numba.njit(cache=False)
def _log_binomial(k, n, log_choose, mu):
    """log Binomial(k | n, mu / n), p clipped to [1e-12, 1 - 1e-9] as the graph does (0 where n
    is 0: no register)."""
    if n <= 0.0:
        return 0.0
    p = mu / n
    if p < 1e-12 or p > 1.0 - 1e-9:
        p = min(max(p, 1e-12), 1.0 - 1e-9)
        return log_choose + k * math.log(p) + (n - k) * math.log1p(-p)
    return log_choose + k * math.log(p) + (n - k) * (math.log(n - mu) - math.log(n))


@numba.njit(cache=False)
def _binomial(k, n, mu):
    """The first three derivatives of `_log_binomial` in mu (zero where p is clipped, or
    where n is 0). Apart from it, so that the Newton steps take no logarithm."""
    if n <= 0.0 or mu < 1e-12 * n or mu > (1.0 - 1e-9) * n:
        return 0.0, 0.0, 0.0
    rest = n - mu
    return (k / mu - (n - k) / rest, -k / mu**2 - (n - k) / rest**2,
            2.0 * k / mu**3 - 2.0 * (n - k) / rest**3)


@numba.njit(cache=False)
def _area_state(w, odds, order, start, stop, k, n, mean, precision, u, third):
    """At u: the log joint's slope f', the clamped negative curvature H used by the steps and
    the formula, the unclamped one, and the moments and derivatives needed later (mu for
    the likelihood's value, `_log_binomial`)."""
    mu, m1, m2, m3 = _moments(w, odds, order, start, stop, u, third)
    l1, l2, l3 = _binomial(k, n, mu)
    slope = l1 * m1 - (u - mean) * precision
    luu = l2 * m1 * m1 + l1 * m2
    curvature = max(precision - luu, precision)
    return slope, curvature, precision - luu, mu, m1, m2, m3, l1, l2, l3


@numba.njit(cache=False)
def _marginal(value, u, mean, precision, curvature):
    """The Laplace formula's term for one area."""
    prior = 0.5 * math.log(precision) - 0.5 * LOG_2PI - 0.5 * (u - mean) ** 2 * precision
    return value + prior + 0.5 * (LOG_2PI - math.log(curvature))


@numba.njit(cache=False)
def _modes(w, g, mean, sigma, u0, k, n, log_choose, order, offsets):
    """Each area's mode, by Newton steps (each at most 1) from u0 clipped to within 4 of the
    prior mean until a step is under `TOLERANCE` (at most `MAX_STEPS`), its Laplace term
    there, and the clamped curvature."""
    areas = len(mean)
    terms, modes, curvatures = np.empty(areas), np.empty(areas), np.empty(areas)
    odds = np.exp(-g)
    for a in range(areas):
        start, stop, precision = offsets[a], offsets[a + 1], 1.0 / sigma[a] ** 2
        u = min(max(u0[a], mean[a] - 4.0), mean[a] + 4.0)
        state = _area_state(w, odds, order, start, stop, k[a], n[a], mean[a], precision, u,
                            False)
        for _ in range(MAX_STEPS):
            step = min(max(state[0] / state[1], -1.0), 1.0)
            if abs(step) < TOLERANCE:
                break
            u += step
            state = _area_state(w, odds, order, start, stop, k[a], n[a], mean[a], precision,
                                u, False)
        value = _log_binomial(k[a], n[a], log_choose[a], state[3])
        terms[a] = _marginal(value, u, mean[a], precision, state[1])
        modes[a], curvatures[a] = u, state[1]
    return terms, modes, curvatures


@numba.njit(cache=False)
def collapse(w, g, mean, sigma, u0, k, n, log_choose, order, offsets):
    """Per area, the Laplace term of the marginal, the mode and the clamped curvature there."""
    return _modes(w, g, mean, sigma, u0, k, n, log_choose, order, offsets)


@numba.njit(cache=False)
def diagnostics(w, g, mean, sigma, modes, k, n, log_choose, order, offsets):
    """How much one Newton step more, from `collapse`'s modes, moves the summed terms (the
    gate's `laplace_error`)."""
    moved, odds = 0.0, np.exp(-g)
    for a in range(len(mean)):
        start, stop, precision = offsets[a], offsets[a + 1], 1.0 / sigma[a] ** 2
        mode = _area_state(w, odds, order, start, stop, k[a], n[a], mean[a], precision,
                           modes[a], False)
        u = modes[a] + min(max(mode[0] / mode[1], -1.0), 1.0)
        on = _area_state(w, odds, order, start, stop, k[a], n[a], mean[a], precision, u,
                         False)
        moved += (_marginal(_log_binomial(k[a], n[a], log_choose[a], on[3]), u, mean[a],
                            precision, on[1])
                  - _marginal(_log_binomial(k[a], n[a], log_choose[a], mode[3]), modes[a],
                              mean[a], precision, mode[1]))
    return np.array(abs(moved))


@numba.njit(cache=False)
def gradient(w, g, mean, sigma, modes, k, n, log_choose, order, offsets, d_terms, d_modes):
    """The gradient of sum_a (d_terms_a term_a + d_modes_a u*_a) in w, g, mean and sigma,
    with u* the converged modes (implicit derivatives; see the module's docstring)."""
    d_w, d_g = np.zeros(len(w)), np.zeros(len(g))
    d_mean, d_sigma = np.empty(len(mean)), np.empty(len(mean))
    odds = np.exp(-g)
    for a in range(len(mean)):
        start, stop, u, m = offsets[a], offsets[a + 1], modes[a], mean[a]
        precision = 1.0 / sigma[a] ** 2
        (slope, curvature, unclamped, _, m1, m2, m3, l1, l2, l3) = _area_state(
            w, odds, order, start, stop, k[a], n[a], m, precision, u, True)
        # -1/2 log H moves with the likelihood's curvature only where H is not clamped
        bend = 0.5 / curvature if unclamped > precision else 0.0
        luuu = l3 * m1**3 + 3.0 * l2 * m1 * m2 + l1 * m3
        implicit = (d_terms[a] * (slope + bend * luuu) + d_modes[a]) / max(
            unclamped, 1e-9 * precision)
        gt = d_terms[a]
        a_mu = gt * l1 + gt * bend * (l3 * m1 * m1 + l2 * m2) + implicit * l2 * m1
        a_m1 = gt * bend * 2.0 * l2 * m1 + implicit * l1
        a_m2 = gt * bend * l1
        scale = math.exp(-u)
        for i in range(start, stop):
            c = order[i]
            e = 1.0 / (1.0 + odds[c] * scale)
            s1 = e * (1.0 - e)
            s2 = s1 * (1.0 - 2.0 * e)
            d_w[c] = a_mu * e + a_m1 * s1 + a_m2 * s2
            d_g[c] = w[c] * (a_mu * s1 + a_m1 * s2 + a_m2 * s1 * (1.0 - 6.0 * s1))
        offset = u - m
        d_mean[a] = gt * offset * precision + implicit * precision
        s = sigma[a]
        d_sigma[a] = (gt * (-1.0 / s + offset**2 / s**3 + 1.0 / (curvature * s**3))
                      + implicit * 2.0 * offset / s**3)
    return d_w, d_g, d_mean, d_sigma


#: changes with the kernels' source and constants (numba compiles globals in as constants),
#: so that compiled functions cached on disk from an earlier version are never loaded
_VERSION = int(hashlib.sha256(("".join(
    inspect.getsource(f.py_func) for f in
    (_moments, _log_binomial, _binomial, _area_state, _marginal, _modes, collapse,
     diagnostics, gradient)
) + repr((LOG_2PI, TOLERANCE, MAX_STEPS))).encode()).hexdigest()[:12], 16)

_FLOATS = 5  # w, g, mean, sigma, u0 (or the modes): the differentiable inputs, u0 in value


class AreaLaplace(Op):
    """(terms, modes, curvatures) per area, or with `diagnostics` the laplace_error: the
    kernels above as a PyTensor Op. Inputs: w, g (per cell), mean, sigma and u0 (per area;
    with `diagnostics` the modes), then the data: counts, populations, log binomial
    coefficients (per area), the cells in area order and each area's offset into it. The
    curvatures (for u_sd) and the diagnostics are never part of a log density: they have
    no gradient."""

    __props__ = ("diagnostics",)

    def __init__(self, diagnostics: bool = False):
        self.diagnostics = bool(diagnostics)

    def make_node(self, *inputs):
        floats = [pt.as_tensor(x).astype("float64") for x in inputs[:_FLOATS + 3]]
        ints = [pt.as_tensor(x).astype("int64") for x in inputs[_FLOATS + 3:]]
        per_area = pt.tensor(dtype="float64", shape=(floats[2].type.shape[0],))
        outputs = [pt.tensor(dtype="float64", shape=())] if self.diagnostics else \
            [per_area, per_area.type(), per_area.type()]
        return Apply(self, floats + ints, outputs)

    def perform(self, node, inputs, output_storage):
        values = (diagnostics(*inputs),) if self.diagnostics else collapse(*inputs)
        for storage, value in zip(output_storage, values, strict=True):
            storage[0] = value

    def infer_shape(self, node, shapes):
        return [()] if self.diagnostics else [shapes[2]] * 3

    def connection_pattern(self, node):
        differentiable = not self.diagnostics
        return [[differentiable and i < 4] * len(node.outputs) for i in range(len(node.inputs))]

    def pullback(self, inputs, outputs, cotangents):
        if self.diagnostics:
            raise NotImplementedError("the Laplace collapse's diagnostics have no gradient")
        if not isinstance(cotangents[2].type, DisconnectedType):
            raise NotImplementedError("the curvatures at the modes have no gradient")
        d_terms, d_modes = (pt.zeros_like(out) if isinstance(grad.type, DisconnectedType)
                            else grad for out, grad in zip(outputs[:2], cotangents[:2],
                                                           strict=True))
        grads = AreaLaplaceGradient()(*inputs[:4], outputs[1], *inputs[_FLOATS:],
                                      d_terms, d_modes)
        return list(grads) + [disconnected_type() for _ in inputs[4:]]


class AreaLaplaceGradient(Op):
    """`gradient` as a PyTensor Op."""

    __props__ = ()

    def make_node(self, *inputs):
        inputs = [pt.as_tensor(x) for x in inputs]
        return Apply(self, inputs, [x.type() for x in inputs[:4]])

    def perform(self, node, inputs, output_storage):
        for storage, value in zip(output_storage, gradient(*inputs), strict=True):
            storage[0] = value

    def infer_shape(self, node, shapes):
        return shapes[:4]


@register_funcify_default_op_cache_key(AreaLaplace)
def _numba_area_laplace(op, node, **kwargs):
    kernel = diagnostics if op.diagnostics else collapse

    @numba_njit
    def area_laplace(w, g, mean, sigma, u0, k, n, log_choose, order, offsets):
        return kernel(w, g, mean, sigma, u0, k, n, log_choose, order, offsets)

    return area_laplace, _VERSION


@register_funcify_default_op_cache_key(AreaLaplaceGradient)
def _numba_area_laplace_gradient(op, node, **kwargs):
    @numba_njit
    def area_laplace_gradient(w, g, mean, sigma, modes, k, n, log_choose, order, offsets,
                              d_terms, d_modes):
        return gradient(w, g, mean, sigma, modes, k, n, log_choose, order, offsets,
                        d_terms, d_modes)

    return area_laplace_gradient, _VERSION


class BinomialAreas:
    """The data side of the kernels: each area's register count, population and log
    binomial coefficient, and its cells (`cell_area`) in area order."""

    def __init__(self, counts: np.ndarray, populations: np.ndarray, cell_area: np.ndarray,
                 n_areas: int):
        self.counts = np.asarray(counts, dtype=float)
        self.populations = np.asarray(populations, dtype=float)
        live = self.populations > 0
        self.log_choose = np.where(live, gammaln(self.populations + 1) - gammaln(
            self.counts + 1) - gammaln(np.where(live, self.populations - self.counts, 0) + 1),
            0.0)
        self.order = np.argsort(cell_area, kind="stable").astype(np.int64)
        self.offsets = np.concatenate(
            [[0], np.cumsum(np.bincount(cell_area, minlength=n_areas))]).astype(np.int64)
        self.n_areas = n_areas

    def _data(self) -> list[np.ndarray]:
        return [self.counts, self.populations, self.log_choose, self.order, self.offsets]

    def collapse(self, w, g, mean, sigma, u0):
        """(terms, modes, curvatures): per area, its Laplace term, the mode and the clamped
        curvature there."""
        sigma = pt.broadcast_to(sigma, (self.n_areas,))
        return AreaLaplace()(w, g, mean, sigma, u0, *self._data())

    def diagnostics(self, w, g, mean, sigma, modes):
        """laplace_error: how much one Newton step on from `modes` moves the summed terms
        (never in the density)."""
        sigma = pt.broadcast_to(sigma, (self.n_areas,))
        return AreaLaplace(diagnostics=True)(w, g, mean, sigma, modes, *self._data())
