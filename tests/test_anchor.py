"""The anchored parametrisation of collapsed area effects is exact: the same density over
the model's own parameters, only sampled in other coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from gapmodel.model import build_model
from gapmodel.simulate import simulate
from gapmodel.spec import ModelSpec


def _spec(anchor: bool, levels: list[str]) -> ModelSpec:
    spec = ModelSpec.from_yaml("models/synthetic_icb.yaml")
    area = {"type": "nested" if levels else "iid", "levels": levels, "sigma": 0.5,
            "centered": True, "collapse": True, "anchor": anchor}
    detection = spec.detection.model_copy(update={
        "area": spec.detection.area.model_validate(area),
        "groups": {k: v for k, v in spec.detection.groups.items()
                   if k in ("age_band", "sex")}})
    return spec.model_copy(update={"detection": detection, "missing": None})


@pytest.mark.slow
@pytest.mark.parametrize("levels", [["pcn"], []])
def test_anchored_density_equals_the_original(levels):
    dataset = simulate(24, seed=3, register="totals").dataset
    plain, _ = build_model(dataset, _spec(False, levels))
    anchored, _ = build_model(dataset, _spec(True, levels))
    rng = np.random.default_rng(0)
    names = {"beta_theta", "sigma_u", *(f"{p}_{lvl}" for lvl in levels
                                        for p in ("v", "sigma_level"))}
    for _ in range(3):
        point = {k: v + rng.normal(0, 0.3, np.shape(v))
                 for k, v in anchored.initial_point().items()}
        outs = anchored.replace_rvs_by_values([anchored[n] for n in sorted(names)])
        values = dict(zip(sorted(names), anchored.compile_fn(
            outs, inputs=anchored.value_vars, on_unused_input="ignore")(point), strict=True))
        original = {k: v for k, v in point.items() if not k.startswith("anchor_")}
        for name in names:
            var = plain[name]
            value_var = plain.rvs_to_values[var]
            transform = plain.rvs_to_transforms[var]
            original[value_var.name] = (transform.forward(values[name]).eval()
                                        if transform is not None else values[name])
        # anchored coordinates: offsets (unit Jacobian) and log-ratios of the scales
        # (Jacobian sigma); the original model's density is taken without its own
        # transforms' Jacobians
        jacobian = np.log(values["sigma_u"]) + sum(
            np.log(values[f"sigma_level_{lvl}"]) for lvl in levels)
        expected = plain.compile_logp(jacobian=False)(original) + jacobian
        assert anchored.compile_logp()(point) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_register_root_stays_smooth_where_registers_reach_the_expected_cases():
    """As prevalence falls until an area's registers exceed its expected cases, each area's
    root moves by at most about 8 on the log-odds scale per unit of log prevalence: without
    the cap its slope, 1 / (1 - d), grows without bound and made divergent transitions."""
    import pytensor
    import pytensor.tensor as pt

    from gapmodel.model import _area_totals, _recorded_rate_root, prepare

    dataset = simulate(24, seed=3, register="totals").dataset
    data = prepare(dataset, _spec(True, ["pcn"]))
    population, total = _area_totals(data)
    log_scale = pt.dscalar("log_scale")
    cases_rate = total[data.cell_area] / population[data.cell_area]
    pi = pt.exp(log_scale) * cases_rate  # each area's implied detection is exp(-log_scale)
    root = _recorded_rate_root(data, pi, pt.zeros(data.n_cells))
    root_and_slope = pytensor.function([log_scale],
                                       [root, pytensor.gradient.jacobian(root, log_scale)])
    crossing = np.linspace(-0.5, 0.5, 201)  # implied detection from 1.65 down to 0.61
    roots, slopes = map(np.array, zip(*(root_and_slope(x) for x in crossing), strict=True))
    assert np.isfinite(roots).all() and np.isfinite(slopes).all()
    assert np.abs(slopes).max() <= 8.5
    # where the registers are well below the expected cases the root is the plain logit
    assert roots[-1] == pytest.approx(np.log(np.exp(-0.5) / (1 - np.exp(-0.5))), abs=0.05)


def test_root_information_is_the_registers_curvature_at_their_root():
    """Where an area's registers are one total, the information `_root_information` gives
    the Laplace start is the negative second derivative of their log-likelihood at the
    root: exactly, as the binomial's observed information at its maximum."""
    import pytensor
    import pytensor.tensor as pt

    from gapmodel.layout import obs_totals, to_cells
    from gapmodel.model import (
        _area_totals,
        _recorded_rate_root,
        _register_loglik,
        _root_information,
        prepare,
    )

    dataset = simulate(24, seed=3, register="totals").dataset
    data = prepare(dataset, _spec(True, ["pcn"]))
    population, total = _area_totals(data)
    rng = np.random.default_rng(0)
    pi = 3.0 * total[data.cell_area] / population[data.cell_area]  # detection about 1 / 3
    group_term = rng.normal(0.0, 0.2, data.n_cells)
    root = pytensor.function([], _recorded_rate_root(data, pi, group_term, steps=20))()
    u = pt.dvector("u")
    theta = pt.sigmoid(to_cells(data, u) + group_term)
    loglik = _register_loglik(data, obs_totals(data, data.population * pi * theta, None),
                              None)
    curvature = pytensor.function([u], -pt.grad(pt.sum(pt.grad(loglik, u)), u))(root)
    information = pytensor.function([u], _root_information(data, pi, group_term, u))(root)
    assert information == pytest.approx(curvature, rel=1e-4)
