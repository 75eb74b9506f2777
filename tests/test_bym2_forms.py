"""The sparse centred BYM2 of `gapmodel.model.bym2_effect` is the BYM2 distribution: u's
density, with the structured part integrated out, is N(0, sigma^2 [(1 - rho) I + rho Q^+ / s])
on each component and N(0, sigma^2) on isolated areas. (The eigenbasis and non-centred
forms reproduce the published Scotland fit: tests/test_scotland_bym2.py.)"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy.stats import multivariate_normal

from gapmodel.graph import Graph
from gapmodel.model import bym2_effect


def _graph() -> Graph:
    """A path of 5, a triangle and an isolated area."""
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [5, 7]])
    return Graph.from_edges(9, edges)


def _bym2_cov(graph: Graph, sigma: float, rho: float) -> np.ndarray:
    scale = graph.scaling_factors()
    cov = np.zeros((graph.n, graph.n))
    laplacian = graph.laplacian().toarray()
    for label in range(len(graph.sizes)):
        members = np.flatnonzero(graph.component == label)
        block = np.ix_(members, members)
        if len(members) == 1:
            cov[block] = sigma**2
            continue
        q_plus = np.linalg.pinv(laplacian[block])
        cov[block] = sigma**2 * ((1 - rho) * np.eye(len(members))
                                 + rho * q_plus / scale[members[0]])
    return cov


def _sparse_marginal(graph: Graph, u: np.ndarray, sigma: float, rho: float) -> float:
    """log p(u) of the sparse centred form: its joint log density (without priors on
    sigma and rho) integrated over the structured part, exactly (it is Gaussian in it)."""
    with pm.Model(coords={"area": np.arange(graph.n)}) as model:
        bym2_effect(pt.as_tensor(sigma), graph, centered=True, eigen_limit=0)
    structured = [v for v in model.free_RVs if v.name.startswith("s_u")]
    names = [model.rvs_to_values[v].name for v in structured]
    point = {**model.initial_point(), "u": u,
             "rho_bym2_logodds__": np.log(rho / (1 - rho))}
    logp = model.compile_logp(jacobian=False)  # rho ~ Beta(1, 1): log density 0
    dlogp = model.compile_dlogp(vars=structured, jacobian=False)
    hessian = model.compile_d2logp(vars=structured, jacobian=False, negate_output=False)
    sizes = [point[name].size for name in names]
    h = -np.asarray(hessian(point))
    step = np.linalg.solve(h, np.asarray(dlogp(point)))  # one Newton step: the mode
    for name, part in zip(names, np.split(step, np.cumsum(sizes)[:-1]), strict=True):
        point[name] = point[name] + part
    k = sum(sizes)
    return float(logp(point)) + 0.5 * k * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(h)[1]


def test_sparse_centred_form_has_the_bym2_density() -> None:
    graph = _graph()
    rng = np.random.default_rng(3)
    u = rng.normal(0.0, 0.5, size=graph.n)
    # the ICAR's density is improper only up to constants: differences across (sigma,
    # rho) of the marginal must equal those of the closed form
    settings = [(0.4, 0.7), (0.9, 0.2), (0.25, 0.95)]
    ours = [_sparse_marginal(graph, u, *s) for s in settings]
    exact = [multivariate_normal(np.zeros(graph.n), _bym2_cov(graph, *s)).logpdf(u)
             for s in settings]
    np.testing.assert_allclose(np.diff(ours), np.diff(exact), rtol=0, atol=1e-8)
