"""`gapmodel.model.bym2_effect` samples a centred BYM2 in each component's dense
eigenbasis up to `eigen_limit` areas and in sparse form above it (gapmodel.shifted_laplacian);
the two are the same density. (Each form reproduces the published Scotland fit:
tests/test_scotland_bym2.py.)"""

from __future__ import annotations

import logging

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.graph.traversal import explicit_graph_inputs
from test_shifted_laplacian import grid_graph

from gapmodel.graph import Graph
from gapmodel.model import bym2_effect


def _graph() -> Graph:
    """A path of 5, a triangle and an isolated area."""
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [5, 7]])
    return Graph.from_edges(9, edges)


def _lattice_graph(order: np.ndarray | None = None) -> Graph:
    """A 42-area lattice, a triangle and an isolated area (areas renumbered by `order`)."""
    edges = np.concatenate([grid_graph(6, 7).edges, [[42, 43], [43, 44], [42, 44]]])
    return Graph.from_edges(46, edges if order is None else order[edges])


def _model(graph: Graph, covariate: bool = False, **kwargs) -> pm.Model:
    """The effect alone, or around a mean beta0 + X beta that varies by area."""
    with pm.Model(coords={"area": np.arange(graph.n)}) as model:
        if covariate:
            x = np.random.default_rng(1).standard_normal((graph.n, 1))
            kwargs["mean"] = pm.Normal("beta0", 0.0, 1.0) + x @ pm.Normal("beta", 0.0, 1.0,
                                                                          shape=1)
        bym2_effect(graph, sigma_prior=1.0, centered=True, **kwargs)
    return model


def _free_names(graph: Graph, **kwargs) -> set[str]:
    return {rv.name for rv in _model(graph, **kwargs).free_RVs}


@pytest.mark.parametrize("limit", [5, 100])
def test_centred_in_the_eigenbasis_up_to_the_limit(limit: int) -> None:
    names = _free_names(_graph(), eigen_limit=limit)
    assert {"w_u0", "c_u0", "w_u1", "c_u1", "u_isolated"} <= names
    assert "z_u" not in names and not any(name.startswith("d_u") for name in names)


def test_centred_in_sparse_form_above_the_limit(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="gapmodel.model"):
        names = _free_names(_graph(), eigen_limit=4)
    assert {"d_u0", "c_u0", "w_u1", "c_u1", "u_isolated"} <= names
    assert "z_u" not in names and "w_u0" not in names
    assert "a component of 5 areas is sampled centred in sparse form" in caplog.text


@pytest.mark.parametrize("covariate", [False, True])
def test_sparse_form_is_the_eigenbasis_density(covariate: bool) -> None:
    """At the same u, sigma and rho the two forms' log densities differ by one constant
    (the eigenbasis's normalising terms), whatever the point: the sparse form's sigma,
    sampled as its log ratio to the scale its effects imply, keeps the same density."""
    graph = _lattice_graph()
    eigen, sparse = _model(graph, covariate), _model(graph, covariate, eigen_limit=10)
    assert "w_u0" in eigen.named_vars and "d_u0" in sparse.named_vars
    eigen_logp, sparse_logp = eigen.compile_logp(), sparse.compile_logp()
    [u_value] = eigen.replace_rvs_by_values([eigen["u"]])
    u_fn = pytensor.function(eigen.value_vars, u_value, on_unused_input="ignore")
    u_of = lambda point: u_fn(*(point[v.name] for v in eigen.value_vars))  # noqa: E731
    members = np.flatnonzero(graph.component == 0)
    q = graph.laplacian()[members][:, members].toarray()
    vectors = np.linalg.eigh(q)[1][:, 1:]
    transform = sparse.rvs_to_transforms[sparse["d_u0"]]
    assert "sigma_u" not in {rv.name for rv in sparse.free_RVs}
    [sigma_value] = sparse.replace_rvs_by_values([sparse["sigma_u"]])
    sigma_fn = pytensor.function(sparse.value_vars, sigma_value, on_unused_input="ignore")
    [u_sparse] = sparse.replace_rvs_by_values([sparse["u"]])
    u_sparse_fn = pytensor.function(sparse.value_vars, u_sparse, on_unused_input="ignore")
    rng = np.random.default_rng(3)
    gaps = []
    for _ in range(6):
        point = eigen.initial_point()
        for name in point:
            point[name] = rng.normal(0.0, 0.7, size=np.shape(point[name]))
        deviation = vectors @ point["w_u0"]
        # the sparse form samples u's non-constant part: with a covariate, its mean's too
        local = u_of(point)[members] - u_of(point)[members].mean()
        shifted = {k: v for k, v in point.items() if k not in ("w_u0", "sigma_u_log__")}
        shifted["d_u0_zerosum__"] = transform.forward(pt.as_tensor(local)).eval()
        shifted["sigma_u_sheared"] = np.array(0.0)
        implied = sigma_fn(*(shifted[v.name] for v in sparse.value_vars))
        shifted["sigma_u_sheared"] = point["sigma_u_log__"] - np.log(implied)
        np.testing.assert_allclose(sigma_fn(*(shifted[v.name] for v in sparse.value_vars)),
                                   np.exp(point["sigma_u_log__"]))
        if not covariate:
            np.testing.assert_allclose(local, deviation)
        np.testing.assert_allclose(u_sparse_fn(*(shifted[v.name] for v in sparse.value_vars)),
                                   u_of(point))
        gaps.append(float(sparse_logp(shifted)) - float(eigen_logp(point)))
    assert np.ptp(gaps) < 1e-8, gaps


@pytest.mark.parametrize("limit", [5, 100])
def test_every_components_constant_direction_reaches_the_likelihood(limit: int) -> None:
    """Each component's mean (c_u) moves the counts' log density: a rewrite of the
    set_subtensor that placed it once dropped it from the likelihood, silently (as it did
    on this graph: a lattice, a triangle and an isolated area, the areas shuffled)."""
    graph = _lattice_graph(np.random.default_rng(0).permutation(46))
    with pm.Model(coords={"area": np.arange(graph.n)}) as model:
        u = bym2_effect(graph, sigma_prior=1.0, centered=True, eigen_limit=limit)
        pm.Poisson("y", mu=20 * pt.exp(0.1 + u), observed=np.arange(graph.n) % 7 + 10,
                   dims="area")
    inputs = {v.name for v in explicit_graph_inputs([model.logp(vars=[model["y"]])])}
    assert {f"c_u{label}" for label in np.flatnonzero(graph.sizes > 1)} == \
        {name for name in inputs if name.startswith("c_u")}


@pytest.mark.parametrize("limit", [2, 10])
def test_one_solve_per_sparse_component_in_the_sampled_gradient(limit: int) -> None:
    """PyMC copies every term that uses a sparse component's effects (the counts reach
    them through sigma), and PyTensor's rewrites must merge the copies' solves again.
    With a mean that varies by area, the rewrites once moved the index of the members'
    mean inside its sums in one copy only: two solves in nutpie's function, each gradient
    twice the cost (as on this graph, with binomial counts)."""
    nutpie = pytest.importorskip("nutpie")
    from gapmodel.shifted_laplacian import ShiftedQuadratic

    graph = _lattice_graph()
    model = _model(graph, covariate=True, eigen_limit=limit)
    with model:
        pm.Binomial("y", n=200, p=pm.math.sigmoid(model["u"]), observed=np.arange(46) % 7 + 10)
    compiled = nutpie.compile_pymc_model(model)
    solves = [node for node in compiled.logp_func.maker.fgraph.apply_nodes
              if isinstance(node.op, ShiftedQuadratic)]
    assert len(solves) == int((graph.sizes[graph.sizes > 1] > limit).sum())


def test_covariates_projected_once_leave_the_density_unchanged() -> None:
    """With the mean's covariates given as (X, beta), each eigenbasis projects X at build
    instead of the mean at every gradient: the same log density and gradient at any point,
    and two fewer products with the 42 x 41 eigenvector matrix in the gradient."""
    graph = _lattice_graph()
    x = np.random.default_rng(4).standard_normal((graph.n, 2))

    def build(project: bool) -> pm.Model:
        with pm.Model(coords={"area": np.arange(graph.n)}) as model:
            beta0, beta = pm.Normal("beta0", 0.0, 1.0), pm.Normal("beta", 0.0, 1.0, shape=2)
            bym2_effect(graph, sigma_prior=1.0, centered=True, mean=beta0 + x @ beta,
                        covariates=(x, beta) if project else None)
        return model

    models = [build(False), build(True)]
    functions = [m.logp_dlogp_function(ravel_inputs=True) for m in models]
    for f in functions:
        f.set_extra_values({})
    rng = np.random.default_rng(5)
    size = sum(v.size for v in models[0].initial_point().values())
    for _ in range(5):
        point = rng.normal(size=size)
        (logp_a, grad_a), (logp_b, grad_b) = (f(point) for f in functions)
        np.testing.assert_allclose(logp_b, logp_a, rtol=1e-12)
        np.testing.assert_allclose(grad_b, grad_a, rtol=1e-9, atol=1e-10)

    def eigen_products(f) -> int:
        return sum(1 for node in f._pytensor_function.maker.fgraph.apply_nodes
                   if any(sorted(getattr(i.type, "shape", ())) == [41, 42]
                          for i in node.inputs))

    assert eigen_products(functions[1]) == eigen_products(functions[0]) - 2
