"""Sheared coordinates are exact: the same density over the model's own parameters, only
sampled along the ridges that registers leave open."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import logit

import gapmodel.model as model_module
from gapmodel.model import build_model, prepare, rates_pinned_by_area
from gapmodel.simulate import simulate
from gapmodel.spec import ModelSpec


def _spec(nu: float | None = None) -> ModelSpec:
    spec = ModelSpec.from_yaml("models/synthetic_icb.yaml")
    return spec.model_copy(update={
        "data": spec.data.model_copy(update={"areas": 24}),
        "prevalence": spec.prevalence.model_copy(update={"eps_nu": nu})})


@pytest.mark.parametrize("nu", [None, 3.0])
def test_sheared_prevalence_deviation_keeps_the_density(monkeypatch, nu):
    dataset = simulate(24, seed=3).dataset
    sheared, data = build_model(dataset, _spec(nu))
    assert rates_pinned_by_area(data, 0.1)
    assert "z_eps_sheared" in sheared.named_vars
    monkeypatch.setattr(model_module, "rates_pinned_by_area", lambda *args: False)
    plain, _ = build_model(dataset, _spec(nu))
    assert "z_eps_sheared" not in plain.named_vars
    z_eps = sheared.compile_fn(sheared.replace_rvs_by_values([sheared["z_eps"]])[0],
                               inputs=sheared.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(0)
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.3, np.shape(v))
                 for k, v in sheared.initial_point().items()}
        original = {k: v for k, v in point.items() if k != "z_eps_sheared"}
        original["z_eps"] = z_eps(point)
        # the sampled coordinate differs from z by a shift of the detection effects: the
        # two coordinates agree only where those sit at the intercept
        assert not np.allclose(original["z_eps"], point["z_eps_sheared"])
        assert sheared.compile_logp()(point) == pytest.approx(
            plain.compile_logp()(original), rel=1e-10, abs=1e-8)


def test_prevalence_deviation_is_sheared_only_where_registers_pin_area_rates():
    data = prepare(simulate(24, seed=3).dataset, _spec())
    totals = model_module._area_totals(data)[1]
    median = np.median(totals[totals > 0])
    assert rates_pinned_by_area(data, 1.0 / np.sqrt(median) * 1.01)
    assert not rates_pinned_by_area(data, 1.0 / np.sqrt(median) * 0.99)
    thin = dataclasses.replace(data, obs_lo=data.obs_lo // 50, obs_hi=data.obs_hi // 50)
    assert not rates_pinned_by_area(thin, 0.1)


def test_group_effects_move_along_the_registers_ridge():
    """Registers by stratum pin every cell's recorded rate pi * theta, to first order
    d logit pi = -d logit theta / lambda. A move of the ethnicity detection effects (every
    level, the reference group's included) comes with a move of the prevalence intercepts
    and relative risks that nearly keeps to it; holding alpha and log_rr instead leaves the
    whole move to the data."""
    model, data = build_model(simulate(24, seed=3).dataset, _spec())
    outputs = model.replace_rvs_by_values([model[n] for n in ("alpha", "log_rr", "pi",
                                                              "theta")])
    evaluate = model.compile_fn(outputs, inputs=model.value_vars, on_unused_input="ignore")
    start = model.initial_point()
    alpha0, log_rr0, pi0, theta0 = evaluate(start)
    moved = {**start, "gamma_ethnicity_zerosum__": start["gamma_ethnicity_zerosum__"]
             + np.array([0.4, -0.3, 0.2, 0.1])}
    alpha1, log_rr1, pi1, theta1 = evaluate(moved)
    held = {**moved, "alpha_sheared": moved["alpha_sheared"] + alpha0 - alpha1,
            "log_rr_sheared": moved["log_rr_sheared"] + log_rr0 - log_rr1}
    alpha2, log_rr2, pi2, theta2 = evaluate(held)
    assert np.allclose(alpha2, alpha0) and np.allclose(log_rr2, log_rr0)
    slope = model_module._ridge_slopes(data, data.cell_ref, len(data.ref_strata))
    weight = data.population * pi0

    def off_ridge(pi, theta):
        """Weighted rms of d logit pi + d logit theta / lambda over the cells."""
        step = logit(pi) - logit(pi0) + (logit(theta) - logit(theta0)) / slope[data.cell_ref]
        return np.sqrt(np.average(step**2, weights=weight))

    assert np.allclose(theta1, theta2) and off_ridge(pi2, theta2) > 0.05
    assert off_ridge(pi1, theta1) < 0.2 * off_ridge(pi2, theta2)


def test_area_effects_widening_with_the_intercept_keep_the_density(monkeypatch):
    """Where the registers pin the area detection effects, each BYM2 component's
    eigen-coordinates are sampled in units that widen with the detection intercept,
    w = centre + f w' with f = exp(kappa (gamma0 - mu) x the data's share of each
    direction's precision): the same density over w once the map's Jacobian is counted,
    here taken from the map itself (it scales each coordinate on its own)."""
    dataset = simulate(24, seed=3).dataset
    spec = _spec()
    widened, _ = build_model(dataset, spec)
    names = [n for n in widened.named_vars if n.startswith("w_u") and n.endswith("_spread")]
    assert names
    monkeypatch.setattr(model_module, "_detection_spread", lambda *args: None)
    plain, _ = build_model(dataset, spec)
    assert not any(n.endswith("_spread") for n in plain.named_vars)
    originals = [n.removesuffix("_spread") for n in names]
    w = widened.compile_fn(widened.replace_rvs_by_values([widened[n] for n in originals]),
                           inputs=widened.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(1)
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.3, np.shape(v))
                 for k, v in widened.initial_point().items()}
        original = {k: v for k, v in point.items() if k not in names}
        original.update(zip(originals, w(point), strict=True))
        assert not np.allclose(original[originals[0]], point[names[0]])
        stepped = {k: v + 1.0 if k in names else v for k, v in point.items()}
        factors = np.concatenate(w(stepped)) - np.concatenate(w(point))
        assert np.all(factors > 0) and np.ptp(factors) > 1e-3  # each direction its own
        assert widened.compile_logp()(point) == pytest.approx(
            plain.compile_logp()(original) + np.log(factors).sum(), rel=1e-10, abs=1e-8)
