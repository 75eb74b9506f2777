"""The compiled Laplace collapse (`gapmodel.area_laplace`) against the graph it replaces:
the same terms, modes and diagnostics, and the gradient of the converged approximation."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode

from gapmodel.area_laplace import BinomialAreas
from gapmodel.likelihood import binomial_logpmf
from gapmodel.model import laplace_collapse

AREAS = 24
#: numpy, op by op: the graph's many steps without numba's minutes of compilation
PLAIN = Mode(linker="py", optimizer=None)


def _problem(seed: int):
    """Areas of 1 to 14 cells in shuffled order, one area with no register (population 0)
    and one of 51 people with no one on it (its mode far from its registers' root)."""
    rng = np.random.default_rng(seed)
    cell_area = rng.permutation(np.repeat(np.arange(AREAS), rng.integers(1, 15, AREAS)))
    cells = len(cell_area)
    population = rng.integers(20, 3000, cells).astype(float)
    weights = population * rng.uniform(0.05, 0.4, cells)
    logits = rng.normal(0.5, 0.6, cells)
    mean = rng.normal(0.2, 0.3, AREAS)
    sigma = 0.45
    u = rng.normal(mean, sigma)
    expected = np.bincount(cell_area, weights * (1 / (1 + np.exp(-(logits + u[cell_area])))),
                           minlength=AREAS)
    n = np.bincount(cell_area, population, minlength=AREAS)
    counts = rng.binomial(n.astype(int), expected / n).astype(float)
    n[0], counts[0] = 0.0, 0.0
    population[cell_area == 0] = 0.0
    weights[cell_area == 0] = 0.0
    small = np.flatnonzero(np.bincount(cell_area) == 1)[:1]
    if len(small):
        cell = np.flatnonzero(cell_area == small[0])
        n[small], counts[small] = 51.0, 0.0
        population[cell], weights[cell] = 51.0, 51.0 * 0.2
    start = mean + rng.normal(0, 1.5, AREAS)  # some clipped to 4 from the mean
    return cell_area, weights, logits, mean, sigma, start, counts, n


def _graph(problem, steps: int, kernel: bool):
    """Potential, modes, u_sd and laplace_error of the collapse, as functions of symbolic
    w, g, mean and sigma, and the mode to compile them in (the kernel in numba, as models
    compile it)."""
    cell_area, weights, logits, mean, sigma, start, counts, n = problem
    w, g, m = pt.dvector("w"), pt.dvector("g"), pt.dvector("m")
    s = pt.dscalar("s")
    live = n > 0

    def loglik(u):
        theta = pm.math.sigmoid(u[cell_area] + g)
        mu = pt.inc_subtensor(pt.zeros(AREAS)[cell_area], w * theta)
        p = pt.clip(mu[live] / n[live], 1e-12, 1 - 1e-9)
        return pt.sum(binomial_logpmf(counts[live], n[live], p))

    cells = BinomialAreas(counts, n, cell_area, AREAS) if kernel else None
    with pm.Model(coords={"area": np.arange(AREAS)}) as model:
        u = laplace_collapse(loglik, m, s, pt.as_tensor(start), steps=steps,
                             cells=None if cells is None else (cells, w, g))
    values = {w: weights, g: logits, m: mean, s: sigma}
    return model, u, [w, g, m, s], values, (None if kernel else PLAIN)


def test_kernel_matches_the_converged_graph():
    """From starts up to 4 from the prior's mean, the graph's three steps leave some areas
    short of their modes, its twelve reach them; the kernel steps each area until it
    converges, and matches the twelve."""
    problem = _problem(1)
    out = {}
    for kernel, steps in ((False, 3), (False, 12), (True, 3)):
        model, u, inputs, values, mode = _graph(problem, steps, kernel)
        f = pytensor.function(inputs, [model["register"], u, model["u_sd"],
                                       model["laplace_error"]], mode=mode)
        out[kernel, steps] = f(*values.values())
    for graph, compiled in zip(out[False, 12][:3], out[True, 3][:3], strict=True):
        np.testing.assert_allclose(compiled, graph, rtol=1e-9, atol=1e-9)
    assert out[False, 3][3] > 1e-3  # the graph's three steps: not converged
    # one step more moves the formula's log curvature term to first order: under 1e-9 an
    # area where the steps stop below the kernel's tolerance
    assert out[True, 3][3] < AREAS * 1e-9 and out[False, 12][3] < 1e-9


def test_gradient_is_the_converged_approximations():
    """The kernel differentiates implicitly at its modes; the graph differentiates through
    its steps, which at twelve steps have converged: their gradients agree, for the
    potential and for a weighted sum of the modes (the model uses the modes again)."""
    problem = _problem(2)
    rng = np.random.default_rng(3)
    weights_u = rng.normal(size=AREAS)
    grads = {}
    for kernel in (False, True):
        model, u, inputs, values, mode = _graph(problem, 12, kernel)
        objective = model["register"] + pt.dot(weights_u, u)
        f = pytensor.function(inputs, pytensor.grad(objective, inputs), mode=mode)
        grads[kernel] = f(*values.values())
    for reference, compiled in zip(grads[False], grads[True], strict=True):
        np.testing.assert_allclose(compiled, reference, rtol=1e-7, atol=1e-8)


def test_gradient_matches_finite_differences():
    problem = _problem(4)
    model, u, inputs, values, mode = _graph(problem, 12, True)
    objective = model["register"] + pt.sum(u**2)
    f = pytensor.function(inputs, [objective, *pytensor.grad(objective, inputs)], mode=mode)
    _, *analytic = f(*values.values())
    rng = np.random.default_rng(5)
    for k, name in enumerate(values):
        base = np.asarray(values[name], dtype=float)
        direction = rng.normal(size=base.shape)
        h = 1e-5 * max(1.0, float(np.abs(base).max()))
        shifted = [dict(values), dict(values)]
        shifted[0][name], shifted[1][name] = base + h * direction, base - h * direction
        numeric = (f(*shifted[0].values())[0] - f(*shifted[1].values())[0]) / (2 * h)
        assert np.sum(analytic[k] * direction) == pytest.approx(numeric, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_collapsed_model_samples_under_nutpie_with_the_kernel():
    """A spec whose registers are area totals builds the compiled collapse, and nutpie (which
    compiles the model with numba itself, as the dementia spec samples) runs it: finite
    draws, and the same log density as the graph where the kernel is not used."""
    import nutpie

    from gapmodel import model as model_module
    from gapmodel.area_laplace import AreaLaplace
    from gapmodel.simulate import simulate
    from gapmodel.spec import ModelSpec

    spec = ModelSpec.from_yaml("models/synthetic_icb.yaml")
    detection = spec.detection.model_copy(update={
        "area": spec.detection.area.model_validate(
            {"type": "nested", "levels": ["pcn"], "sigma": 0.5, "collapse": True,
             "anchor": True}),
        "groups": {k: v for k, v in spec.detection.groups.items()
                   if k in ("age_band", "sex")}})
    spec = spec.model_copy(update={"detection": detection, "missing": None})
    dataset = simulate(24, seed=3, register="totals").dataset
    model, _ = model_module.build_model(dataset, spec)
    nodes = pytensor.graph.traversal.ancestors([model["register"]])
    assert any(v.owner is not None and isinstance(v.owner.op, AreaLaplace) for v in nodes)
    compiled = nutpie.compile_pymc_model(model, backend="numba")
    trace = nutpie.sample(compiled, chains=1, tune=30, draws=20, seed=1, progress_bar=False)
    assert np.isfinite(trace.posterior["gamma0"].values).all()
    point = model.initial_point()
    kernel_logp = model.compile_logp()(point)
    original = model_module._binomial_areas
    try:
        model_module._binomial_areas = lambda *args: None
        graph_model, _ = model_module.build_model(dataset, spec)
    finally:
        model_module._binomial_areas = original
    assert kernel_logp == pytest.approx(graph_model.compile_logp()(point), abs=1e-8)
