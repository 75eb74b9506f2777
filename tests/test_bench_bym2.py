"""bench/bym2.py: the simulated LSOA-like graph, the exact ICAR draw and the models."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from bench_support import load_bench


@pytest.fixture(scope="module")
def bym2():
    return load_bench("bym2")


def test_graph_is_planar_with_lsoa_degree_and_islands(bym2):
    n = 400
    graph, points = bym2.lsoa_like_graph(n, seed=3)
    assert ((points >= 0) & (points <= 1)).all()
    assert len(graph.edges) <= 3 * n - 6  # planar
    sizes = sorted(graph.sizes.tolist(), reverse=True)
    assert sizes == [n - 5 - 3, 5, 1, 1, 1]  # mainland, an island in the corner, 3 isolated
    assert graph.isolated.sum() == 3
    main = graph.component == np.argmax(graph.sizes)
    degree = np.bincount(graph.edges.ravel(), minlength=n)
    assert 5.0 < degree[main].mean() < 6.0

    connected, _ = bym2.lsoa_like_graph(n, seed=3, islands=False)
    assert len(connected.sizes) == 1
    assert 5.5 < 2 * len(connected.edges) / n < 6.0  # Delaunay: 6 less the hull


def _tiny_graph(bym2):
    # 0-1-2-3-0 cycle with chord 0-2; path 4-5-6; 7 isolated
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (4, 5), (5, 6)]
    return bym2.Graph.from_edges(8, np.array(edges))


def test_icar_draw_has_the_pseudo_inverse_covariance(bym2):
    graph = _tiny_graph(bym2)
    m = 40_000
    draws = bym2.icar_draw(graph, np.random.default_rng(0), size=m)  # (m, n)
    assert draws.shape == (m, 8)
    for label in range(len(graph.sizes)):  # sum to zero on every component, 0 when alone
        np.testing.assert_allclose(draws[:, graph.component == label].sum(axis=1), 0,
                                   atol=1e-10)
    np.testing.assert_array_equal(draws[:, 7], 0.0)
    cov = np.linalg.pinv(graph.laplacian().toarray())
    empirical = draws.T @ draws / m  # the mean is known (0)
    # sd of a mean of m products x_i x_j of zero-mean normals: sqrt((S_ii S_jj + S_ij^2) / m)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / m)
    inner = np.triu_indices(7)  # area 7 is exactly 0, checked above
    z = (empirical[:7, :7] - cov[:7, :7])[inner] / se[:7, :7][inner]
    assert np.abs(z).max() < 4.5  # 28 entries: a false alarm has probability ~2e-4


def test_one_draw_is_a_vector(bym2):
    draw = bym2.icar_draw(_tiny_graph(bym2), np.random.default_rng(1))
    assert draw.shape == (8,)


def test_models_build_on_the_same_data(bym2):
    data = bym2.simulate(50, seed=2)
    assert data.y.shape == (50,) and (data.y >= 0).all()
    builds = {which: functools.partial(bym2.product_model, which=which)
              for which in ("product", "centred", "sparse")}
    for which, build in {**builds, "handwritten": bym2.handwritten_model}.items():
        model = build(data)
        np.testing.assert_array_equal(model.rvs_to_values[model["y"]].data, data.y)
        logp = model.compile_logp()(model.initial_point())
        assert np.isfinite(logp)
        # sampled, or (sigma of the sparse form, sheared along the effects) deterministic
        stored = {v.name for v in [*model.free_RVs, *model.deterministics]}
        assert set(bym2.NAMES[which].values()) <= stored

    graph = data.graph
    stan = bym2.stan_data(data, graph.scaling_factors())
    np.testing.assert_array_equal(stan["y"], data.y)
    np.testing.assert_array_equal(stan["E"], data.expected)
    conn = np.array(stan["conn"]) - 1
    assert stan["N_conn"] == graph.n - graph.isolated.sum() == len(conn)
    assert not graph.isolated[conn].any()
    # Stan's edges, mapped back through conn, are the graph's
    back = np.column_stack([conn[np.array(stan["node1"]) - 1], conn[np.array(stan["node2"]) - 1]])
    np.testing.assert_array_equal(back, graph.edges)
    for start, size in zip(stan["comp_start"], stan["comp_size"], strict=True):
        block = conn[start - 1:start - 1 + size]
        assert len(set(graph.component[block])) == 1
        assert graph.sizes[graph.component[block[0]]] == size
    p = bym2.priors()
    assert stan["prior_rho"] == [p.rho.alpha, p.rho.beta] and stan["prior_sigma"] == p.sigma.sigma


def test_report_with_notes_and_stan_ratio(bym2):
    base = {"wall_s": 10.0, "compile_s": 2.0, "min_ess": 100.0, "worst": "rho",
            "max_rhat": 1.001, "divergences": 0, "peak_mb": 500.0, "us_per_grad_area": 0.1,
            "covered": {"beta1": True, "sigma": True, "rho": False}, "edges": 852,
            "components": [292, 5, 1, 1, 1], "draws": 200,
            "ess": {"beta0": 150.0, "beta1": 150.0, "sigma": 120.0, "rho": 100.0}}
    rows = [{**base, "areas": 300, "model": "product", "sampler": "nutpie", "ess_per_s": 10.0},
            {**base, "areas": 300, "model": "stan", "sampler": "rstan", "ess_per_s": 2.0},
            {"areas": 9000, "model": "handwritten", "sampler": "pymc", "note": "skipped"}]
    text = bym2.report(rows)
    assert "  5.00 " in text  # product ESS/s over Stan's
    assert "skipped" in text and "3 isolated" in text and "NO" in text
    assert "     600     500  no" in text  # sigma and rho ESS per 1,000 draws; gate
