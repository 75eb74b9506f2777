"""Every shipped spec is valid and builds a model with a finite log density on its data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from conftest import shared_data_dir

from gapmodel.model import build_model, eps_start
from gapmodel.sources import load_spec_data
from gapmodel.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "models").glob("*.yaml"))
DATA = shared_data_dir()


def test_specs_are_shipped_and_valid():
    names = {p.stem for p in SPECS}
    assert {"synthetic_icb", "hypertension_england_pcn", "hypertension_england_subicb",
            "dementia_england_pcn"} <= names
    for path in SPECS:
        spec = ModelSpec.from_yaml(path)
        assert spec.name == path.stem
        assert spec.sampler.name == "nutpie" and spec.sampler.draws >= 1000


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_builds_on_its_data(path: Path):
    spec = ModelSpec.from_yaml(path)
    if spec.data.kind == "england" and DATA is None:
        pytest.skip("the England data directory (../shared/data) is absent")
    if spec.data.kind == "simulate":  # a smaller scenario builds the same structure
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"areas": 40})})
    dataset, _ = load_spec_data(spec, DATA)
    model, data = build_model(dataset, spec)
    logps = model.point_logps()
    assert all(np.isfinite(v) for v in logps.values()), logps
    assert "register" in logps and data.n_cells == len(dataset.cells)


def test_spec_errors_are_explained():
    with pytest.raises(ValueError, match="nested effects need 'levels'"):
        ModelSpec.model_validate({"name": "x", "detection": {"area": {"type": "nested"}}})
    with pytest.raises(ValueError, match="collapse works for iid or nested"):
        ModelSpec.model_validate({"name": "x", "detection": {"area": {"type": "bym2",
                                                                      "collapse": True}}})
    with pytest.raises(ValueError, match="extra"):
        ModelSpec.model_validate({"name": "x", "sampler": {"chain": 4}})


def test_heavy_tailed_area_variation_is_a_student_t():
    base = ModelSpec.from_yaml(ROOT / "models" / "synthetic_icb.yaml")
    spec = base.model_copy(update={
        "data": base.data.model_copy(update={"areas": 20}),
        "prevalence": base.prevalence.model_copy(update={"sigma_eps": 0.1, "eps_nu": 3.0})})
    dataset, _ = load_spec_data(spec, None)
    model, _ = build_model(dataset, spec)
    point = model.initial_point()
    z_eps = model.compile_fn(model.replace_rvs_by_values([model["z_eps"]])[0],
                             inputs=model.value_vars, on_unused_input="ignore")(point)
    # the prior on z is Student t with 3 degrees of freedom, whether z is sampled itself or
    # sheared along the registers' ridge (then its prior is a potential)
    term = "z_eps_prior" if "z_eps_sheared" in model.named_vars else "z_eps"
    assert model.point_logps(point, round_vals=12)[term] == pytest.approx(
        scipy.stats.t(3.0).logpdf(z_eps).sum(), rel=1e-6)
    with pytest.raises(ValueError, match="greater than 0"):
        ModelSpec.model_validate({"name": "x", "prevalence": {"eps_nu": 0}})


def test_heavy_tailed_deviation_starts_where_the_register_is_within_reach():
    base = ModelSpec.from_yaml(ROOT / "models" / "synthetic_icb.yaml")
    spec = base.model_copy(update={"data": base.data.model_copy(update={"areas": 20})})
    dataset, _ = load_spec_data(spec, None)
    _, data = build_model(dataset, spec)
    assert (eps_start(data, 0.1) == 0).mean() > 0.9  # registers within reach: start at 0
    first = data.cell_area[data.pair_cell[data.pair_obs == 0]][0]
    own = np.unique(data.pair_obs[data.cell_area[data.pair_cell] == first])
    lo, hi = data.obs_lo.copy(), data.obs_hi.copy()
    lo[own], hi[own] = lo[own] * 20, hi[own] * 20  # a nursing-home list: 20 x the cases
    start = eps_start(dataclasses.replace(data, obs_lo=lo, obs_hi=hi), 0.1)
    before = eps_start(data, 0.1)
    # the log excess over 90% detection of the evidence's cases, in units of sigma_eps:
    # log(20 x) / 0.1 where the area recorded x times 90% of its expected cases before
    assert 0 < start[first] <= np.log(20) / 0.1 + before[first] + 1e-9
    if before[first] > 0:
        assert start[first] == pytest.approx(np.log(20) / 0.1 + before[first])
    assert np.array_equal(np.delete(start, first), np.delete(before, first))


def test_with_lengths_is_a_cold_start_at_those_lengths():
    sampler = ModelSpec.from_yaml(ROOT / "models" / "hypertension_england_pcn.yaml").sampler
    assert sampler.warm_start is not None and sampler.pilot is not None
    quick = sampler.with_lengths(50, 60, 1)
    assert (quick.draws, quick.tune, quick.chains) == (50, 60, 1)
    assert quick.warm_start is None and quick.pilot is None
    assert sampler.with_lengths(50, 50).chains == sampler.chains
