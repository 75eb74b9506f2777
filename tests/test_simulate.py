"""Synthetic scenarios: deterministic, valid, and consistent with the truth they carry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from gapmodel.data import load_dataset
from gapmodel.simulate import (
    NOT_STATED,
    Scenario,
    components,
    default_scenario,
    load_truth,
    publish,
    simulate,
)

#: Binomial draws checked against this many standard deviations (chance of a false alarm
#: per check ~6e-7), plus one count of slack for small expectations.
Z = 5.0


@pytest.fixture(scope="module")
def default() -> Scenario:
    return default_scenario()


@pytest.fixture(scope="module")
def small() -> Scenario:
    return simulate(60, seed=3)


def with_attributes(scenario: Scenario) -> pd.DataFrame:
    """Truth cells joined with the stratum attributes of dataset.cells."""
    attributes = scenario.dataset.cells[["age_band", "sex", "ethnicity", "imd_quintile"]]
    return pd.concat([scenario.truth.cells, attributes.reset_index(drop=True)], axis=1)


def binomial_ok(y: np.ndarray, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    sd = np.sqrt(n * p * (1 - p))
    return np.abs(y - n * p) <= Z * sd + 1


# -- identity and files ------------------------------------------------------------------


def test_deterministic_by_seed():
    a, b, c = simulate(30, seed=7), simulate(30, seed=7), simulate(30, seed=8)
    assert a.dataset.hash == b.dataset.hash
    assert a.dataset.hash != c.dataset.hash
    pd.testing.assert_frame_equal(a.truth.cells, b.truth.cells)
    assert a.truth.parameters == b.truth.parameters


def test_default_scenario_is_the_icb(default: Scenario):
    summary = default.dataset.summary()
    assert summary["areas"] == 300
    assert summary["levels"]["sub_icb"] >= 2 and summary["levels"]["icb"] == 1
    assert 30 <= summary["levels"]["pcn"] <= 50
    assert summary["warnings"] == 0
    assert default.dataset.manifest.area_level == "practice"
    assert list(default.dataset.areas.columns) == ["area", "name", "pcn", "sub_icb", "icb"]
    assert default.dataset.hash == simulate().dataset.hash
    lists = default.dataset.cells.groupby("area")["population"].sum()
    assert 4000 < lists.median() < 8000
    notes = [p.message for p in default.dataset.report if p.rule == "harmonisation"]
    assert any("not written" in n for n in notes)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(small: Scenario, tmp_path: Path, fmt: str):
    directory = small.write(tmp_path / "scenario", fmt=fmt)
    assert load_dataset(directory).hash == small.dataset.hash
    truth = load_truth(directory)
    assert truth.parameters == json.loads(json.dumps(small.truth.parameters))
    pd.testing.assert_frame_equal(truth.cells, small.truth.cells, check_dtype=False,
                                  check_exact=True)
    pd.testing.assert_frame_equal(truth.areas, small.truth.areas, check_dtype=False,
                                  check_exact=True)
    assert load_truth(directory / "truth").cells.shape == small.truth.cells.shape


def test_size_parameter():
    scenario = simulate(n_areas=60, seed=1)
    assert len(scenario.dataset.areas) == 60
    assert scenario.dataset.cells["area"].nunique() == 60
    assert len(scenario.truth.areas) == 60
    with pytest.raises(ValueError, match="n_areas"):
        simulate(n_areas=5)
    with pytest.raises(ValueError, match="register"):
        simulate(n_areas=20, register="margins")


# -- structure ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_areas", [12, 60, 300])
def test_graph_has_mainland_cluster_and_island(n_areas: int, default: Scenario):
    scenario = default if n_areas == 300 else simulate(n_areas, seed=n_areas)
    dataset = scenario.dataset
    index = pd.Index(dataset.areas["area"])
    edges = np.column_stack([index.get_indexer(dataset.adjacency["area1"]),
                             index.get_indexer(dataset.adjacency["area2"])])
    count, labels = components(len(index), edges)
    sizes = sorted(np.bincount(labels).tolist())
    assert count == 3
    assert sizes[0] == 1  # the island
    assert 2 <= sizes[1] <= max(2, round(0.05 * n_areas))  # the detached cluster
    assert sizes[2] == n_areas - 1 - sizes[1]  # the mainland
    degree = np.bincount(edges.ravel(), minlength=len(index))
    island = scenario.truth.parameters["scenario"]["island"]
    assert degree[index.get_loc(island)] == 0 and (degree == 0).sum() == 1
    detached = scenario.truth.parameters["scenario"]["detached"]
    assert len(set(labels[index.get_indexer(detached)])) == 1 and len(detached) == sizes[1]


def test_cells_populations_and_covariates(small: Scenario):
    dataset, cells = small.dataset, small.truth.cells
    assert (dataset.cells["population"] > 0).all()
    assert (cells[["area", "stratum"]].to_numpy()
            == dataset.cells[["area", "stratum"]].to_numpy()).all()
    assert dataset.strata["stratum"].iloc[0] == "18-39|F|White|1"
    joined = with_attributes(small)
    non_white = joined["population"].where(joined["ethnicity"] != "White", 0)
    share = 100 * non_white.groupby(joined["area"]).sum() \
        / joined.groupby("area")["population"].sum()
    covariates = dataset.covariates.loc[share.index]
    np.testing.assert_allclose(covariates["pct_non_white"], share, atol=0.006)
    quintiles = joined.groupby("area")["imd_quintile"].nunique()
    assert quintiles.between(1, 4).all() and quintiles.median() <= 3


# -- truth consistency -------------------------------------------------------------------


def test_truth_counts_are_consistent(small: Scenario):
    cells = small.truth.cells
    assert (cells["recorded"] + cells["undiagnosed"] == cells["cases"]).all()
    assert (cells["recorded_known"] <= cells["recorded"]).all()
    assert (cells["cases"] <= cells["population"]).all()
    np.testing.assert_allclose(cells["expected"], cells["population"] * cells["pi"])
    np.testing.assert_allclose(cells["expected_undiagnosed"],
                               cells["expected"] * (1 - cells["theta"]))


def test_truth_follows_the_linear_predictors(small: Scenario):
    """logit(pi) and logit(theta) are exactly the design's sums of true parameters."""
    p, cells = small.truth.parameters, with_attributes(small)
    area = small.truth.areas.set_index("area").loc[cells["area"]]
    x, eps, u = (area[c].to_numpy() for c in ("x_imd", "eps", "u"))
    ref = cells["age_band"] + "|" + cells["sex"]
    eta_pi = (ref.map(p["alpha"]) + cells["ethnicity"].map(p["offset_eth"])
              + p["beta_pi"] * x + eps)
    np.testing.assert_allclose(logit(cells["pi"]), eta_pi, atol=1e-9)
    eta_theta = (p["gamma0"] + cells["age_band"].map(p["gamma_age"])
                 + cells["sex"].map(p["gamma_sex"]) + cells["ethnicity"].map(p["gamma_eth"])
                 + cells["imd_quintile"].map(p["gamma_imd"]) + p["beta_theta"] * x + u)
    np.testing.assert_allclose(logit(cells["theta"]), eta_theta, atol=1e-9)
    assert p["gamma_imd"]["3"] == 0.0
    scale = p["covariate_standardisation"]["imd_score"]
    imd = small.dataset.covariates["imd_score"].to_numpy()
    np.testing.assert_allclose(small.truth.areas["x_imd"],
                               (imd - scale["mean"]) / scale["sd"])


def test_area_effects(default: Scenario):
    areas = default.truth.areas.set_index("area")
    assert abs(areas["u"].mean()) < 1e-12
    island = default.truth.parameters["scenario"]["island"]
    assert areas.loc[island, "u_structured"] == 0.0
    for _, group in areas.groupby("component"):
        assert abs(group["u_structured"].sum()) < 1e-8  # ICAR: sum to zero per component
    assert 0.15 < areas["u"].std() < 0.5
    assert areas["rho_recording"].between(0.5, 1).mean() > 0.95
    assert 0.85 < areas["rho_recording"].median() < 0.95


def test_register_cells_with_not_stated(small: Scenario):
    register = small.dataset.registers["register"]
    counts = register["count"].astype(int).to_numpy()
    truth = with_attributes(small)
    keys = ["area", "age_band", "sex", "imd_quintile"]
    stated = register["ethnicity"] != NOT_STATED
    known = register[stated].assign(count=counts[stated.to_numpy()])
    merged = known.merge(truth, on=["area", "age_band", "sex", "ethnicity", "imd_quintile"],
                         validate="one_to_one")
    assert len(merged) == len(truth)
    assert (merged["count"] == merged["recorded_known"]).all()
    published = register.assign(count=counts).groupby(keys)["count"].sum()
    recorded = truth.groupby(keys)["recorded"].sum()
    pd.testing.assert_series_equal(published.sort_index(), recorded.sort_index(),
                                   check_names=False, check_dtype=False)
    assert (small.dataset.observations["incomplete"] == "ethnicity").sum() == (~stated).sum()


def test_register_cells_without_not_stated_and_totals():
    cells_form = simulate(40, seed=5, not_stated=False)
    totals_form = simulate(40, seed=5, register="totals")
    pd.testing.assert_frame_equal(cells_form.truth.cells, totals_form.truth.cells)
    recorded = cells_form.truth.cells["recorded"].to_numpy()
    register = cells_form.dataset.registers["register"]
    assert (register["count"].astype(int).to_numpy() == recorded).all()
    totals = totals_form.dataset.registers["register"]
    assert list(totals.columns[totals.columns != "level"]) == ["area", "count"]
    by_area = totals_form.truth.cells.groupby("area", sort=False)["recorded"].sum()
    assert (totals["count"].astype(int).to_numpy() == by_area.to_numpy()).all()
    for scenario in (cells_form, totals_form):
        observations = scenario.dataset.observations
        assert (observations["lo"] == scenario.true_counts()).all()


def test_detection_gaps_are_in_the_truth(default: Scenario):
    cells = with_attributes(default)
    weighted = cells.assign(found=cells["expected"] * cells["theta"])

    def detection(by: str) -> pd.Series:
        sums = weighted.groupby(by)[["found", "expected"]].sum()
        return sums["found"] / sums["expected"]

    eth, imd = detection("ethnicity"), detection("imd_quintile")
    assert eth["Black"] < eth["Asian"] < eth["White"]
    assert eth["Mixed"] < eth["White"] and eth["Other"] < eth["White"]
    assert imd["1"] < imd["3"] < imd["5"]
    realised = cells.groupby("ethnicity")[["recorded", "cases"]].sum()
    rate = realised["recorded"] / realised["cases"]
    assert rate["Black"] < rate["White"]
    age = detection("age_band")
    assert age["18-39"] < age["40-59"] < age["60-79"]
    assert 0.5 < cells["recorded"].sum() / cells["cases"].sum() < 0.75


# -- censoring ---------------------------------------------------------------------------


def test_publish_rounds_and_suppresses():
    values = np.array([0, 1, 2, 3, 7, 8, 12, 13, 100])
    assert publish(values).tolist() == ["0", "1", "2", "3", "7", "8", "12", "13", "100"]
    assert publish(values, round_to=5).tolist() == ["0", "0", "0", "5", "5", "10", "10",
                                                    "15", "100"]
    assert publish(values, suppress=True).tolist() == ["0", "*", "*", "*", "*", "8", "12",
                                                       "13", "100"]
    even = publish(np.arange(8), round_to=4).astype(int)
    assert ((np.arange(8) >= np.maximum(even - 2, 0)) & (np.arange(8) <= even + 1)).all()


@pytest.mark.parametrize("options", [{"suppress": True}, {"round_to": 5},
                                     {"suppress": True, "round_to": 5},
                                     {"register": "totals", "round_to": 10},
                                     {"not_stated": False, "suppress": True}])
def test_censoring_intervals_contain_the_truth(options: dict):
    scenario = simulate(40, seed=11, **options)
    observations, truth = scenario.dataset.observations, scenario.true_counts()
    assert ((observations["lo"] <= truth) & (truth <= observations["hi"])).all()
    if options.get("suppress"):
        suppressed = observations["censoring"] == "suppressed"
        assert suppressed.any()
        assert truth[suppressed].between(1, 7).all()
    if options.get("round_to"):
        rounding = scenario.dataset.manifest.registers["register"].rounding
        assert rounding == options["round_to"]
        assert (observations["lo"] < observations["hi"]).any()


# -- reference evidence ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_survey_samples_the_population(seed: int):
    """Survey prevalence = population-weighted true pi of the stratum; diagnosed share =
    case-weighted true theta; the counts lie within binomial bounds of both."""
    scenario = simulate(12, seed=seed)
    p, reference = scenario.truth.parameters, scenario.dataset.reference
    truth = scenario.truth.cells
    ref = truth["stratum"].str.split("|").str[:2].str.join("|")
    cases = truth["population"] * truth["pi"]
    frame = pd.DataFrame({"ref": ref, "n": truth["population"], "cases": cases,
                          "found": cases * truth["theta"]}).groupby("ref").sum()
    prevalence = reference[reference["measure"] == "prevalence"].set_index("ref_stratum")
    assert len(prevalence) == 8 and prevalence["n"].between(300, 700).all()
    pi = (frame["cases"] / frame["n"]).loc[prevalence.index].to_numpy()
    assert binomial_ok(prevalence["y"].to_numpy(), prevalence["n"].to_numpy(), pi).all()
    diagnosed = reference[reference["measure"] == "diagnosed"].set_index("ref_stratum")
    assert (diagnosed["n"] == prevalence.loc[diagnosed.index, "y"]).all()
    theta = (frame["found"] / frame["cases"]).loc[diagnosed.index].to_numpy()
    assert binomial_ok(diagnosed["y"].to_numpy(), diagnosed["n"].to_numpy(), theta).all()
    np.testing.assert_allclose(
        theta, [p["reference_truth"][k]["diagnosed"] for k in diagnosed.index])


def test_reference_map_relative_risks(small: Scenario):
    p, mapping = small.truth.parameters, small.dataset.reference_map
    strata = small.dataset.strata.set_index("stratum").loc[mapping["stratum"]]
    assert (mapping["ref_stratum"].to_numpy()
            == (strata["age_band"] + "|" + strata["sex"]).to_numpy()).all()
    white = (strata["ethnicity"] == "White").to_numpy()
    assert (mapping.loc[white, ["log_rr_mean", "log_rr_sd"]] == 0).all().all()
    assert (mapping.loc[~white, "log_rr_sd"] == 0.15).all()
    offsets = strata["ethnicity"].map(p["offset_eth"]).to_numpy()
    noise = mapping["log_rr_mean"].to_numpy() - offsets
    assert (np.abs(noise) <= Z * 0.1).all()


def test_custom_ethnicities():
    scenario = simulate(20, seed=2, ethnicities=("White", "South Asian", "Black"))
    assert set(scenario.dataset.strata["ethnicity"]) == {"White", "South Asian", "Black"}
    assert scenario.truth.parameters["gamma_eth"]["South Asian"] == 0.0
