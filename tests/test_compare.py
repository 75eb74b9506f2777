"""Pointwise register log-likelihood (LOO, model comparison) and the predictive check."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import write_tiny

from gapmodel.compare import (
    POINTWISE,
    VAR_NAME,
    add_log_likelihood,
    compare,
    log_likelihood,
    loo,
    pointwise_model,
    predictive_check,
)
from gapmodel.data import load_dataset
from gapmodel.fit import fit
from gapmodel.simulate import simulate
from gapmodel.spec import ModelSpec

TINY_SPEC = {
    "name": "tiny",
    "data": {"kind": "directory", "path": "unused"},
    "detection": {"groups": {"sex": {"type": "free", "pooled": False}},
                  "area": {"type": "iid", "centered": False}},
    "missing": {},
    "sampler": {"chains": 2, "tune": 60, "draws": 40, "seed": 5},
    "derived_draws": 20,
}


def tiny_spec(**likelihood) -> ModelSpec:
    return ModelSpec.model_validate({**TINY_SPEC, "likelihood": likelihood or {}})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return load_dataset(write_tiny(tmp_path_factory.mktemp("data") / "tiny"))


@pytest.fixture(scope="module")
def fits(tiny_data):
    out = {}
    for label, likelihood in (("binomial", {}), ("beta_binomial",
                                                 {"family": "beta_binomial"})):
        spec = tiny_spec(**likelihood)
        result = fit(tiny_data, spec, progress=False)
        add_log_likelihood(result.idata, tiny_data, spec)
        out[label] = (spec, result)
    return out


def collapsed_spec(anchor: bool = False) -> ModelSpec:
    spec = ModelSpec.from_yaml("models/synthetic_icb.yaml")
    detection = spec.detection.model_copy(update={
        "area": spec.detection.area.model_validate(
            {"type": "nested", "levels": ["pcn"], "sigma": 0.5, "collapse": True,
             "anchor": anchor}),
        "groups": {k: v for k, v in spec.detection.groups.items() if k in ("age_band", "sex")}})
    return spec.model_copy(update={"detection": detection, "missing": None})


def _sums_match_potential(dataset, spec: ModelSpec, points: int = 3) -> tuple[str, int]:
    """At perturbed points, the pointwise terms sum to the model's register potential."""
    built = pointwise_model(dataset, spec)
    model = built.model
    outs = model.replace_rvs_by_values([model[POINTWISE], model["register"]])
    f = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(1)
    for _ in range(points):
        point = {k: v + rng.normal(0, 0.2, np.shape(v)) for k, v in model.initial_point().items()}
        terms, total = f(point)
        assert np.all(np.isfinite(terms))
        assert terms.sum() == pytest.approx(float(total), rel=1e-9, abs=1e-6)
    return built.unit, len(built.labels)


def test_terms_sum_to_the_register_potential(tiny_data):
    for likelihood in ({}, {"family": "beta_binomial"}):
        unit, count = _sums_match_potential(tiny_data, tiny_spec(**likelihood))
        assert unit == "observation"
        assert count == int((tiny_data.observations["population"] > 0).sum())


@pytest.mark.parametrize("anchor", [False, True])
def test_collapsed_terms_are_per_area_laplace_marginals(anchor: bool):
    dataset = simulate(16, seed=2, register="totals").dataset
    unit, count = _sums_match_potential(dataset, collapsed_spec(anchor), points=2)
    assert unit == "area"
    assert count == len(dataset.areas)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")
def test_log_likelihood_group_feeds_loo_and_compare(fits, tiny_data):
    spec, result = fits["binomial"]
    ll = result.idata["log_likelihood"][VAR_NAME]
    live = int((tiny_data.observations["population"] > 0).sum())
    assert ll.dims == ("chain", "draw", f"{VAR_NAME}_observation")
    assert ll.shape == (spec.sampler.chains, spec.sampler.draws, live)
    assert np.isfinite(ll.values).all() and (ll.values <= 0).all()
    again = log_likelihood(result.idata, tiny_data, spec)
    np.testing.assert_allclose(again[VAR_NAME].values, ll.values)
    elpd = loo(result.idata)
    assert np.isfinite(elpd.elpd) and elpd.n_data_points == live
    table = compare({k: r.idata for k, (_, r) in fits.items()})
    assert set(table.index) == {"binomial", "beta_binomial"}
    assert table["rank"].min() == 0


def test_compare_refuses_different_observations(fits):
    _, result = fits["binomial"]
    other = result.idata.copy()
    ll = other["log_likelihood"].to_dataset()
    other["log_likelihood"] = xr.DataTree(ll.isel({f"{VAR_NAME}_observation": slice(1, None)}))
    with pytest.raises(ValueError, match="same register observations"):
        compare({"a": result.idata, "b": other})
    with pytest.raises(ValueError, match="add_log_likelihood"):
        loo(fits["beta_binomial"][1].idata.copy().drop_nodes("log_likelihood"))


def test_predictive_check_per_observation(fits, tiny_data):
    for spec, result in fits.values():
        check = predictive_check(result.idata, tiny_data, spec, max_draws=60, seed=2)
        t = check.table
        assert len(t) == check.draws.shape[1] and check.draws.shape[0] == 60
        assert (t["lower"] <= t["median"]).all() and (t["median"] <= t["upper"]).all()
        assert t["percentile"].between(0, 1).all()
        assert (check.draws >= 0).all() and (check.draws <= t["population"].to_numpy()).all()
        assert 0 <= check.coverage <= 1
        assert check.summary()["observations"] == len(t)
        # censored counts keep their interval; the check meets it, not a substituted value
        assert (t["lo"] <= t["hi"]).all() and (t["lo"] < t["hi"]).any()
