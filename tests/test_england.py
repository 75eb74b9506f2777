"""England builders end to end on the real public files, checked against the sources."""

from __future__ import annotations

import math
import os
import re
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gapmodel.data import Dataset, load_dataset
from gapmodel.data.england import (
    BUILDERS,
    DEM_UNDER65_SHARE,
    HSE_DESIGN_EFFECT,
    HSE_N_PER_STRATUM,
    largest_remainder,
    pcn_cells,
)


def _data_dir() -> Path | None:
    env = os.environ.get("GAPMODEL_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return path if (path / "qof_2022_23_prevalence_by_practice_all_registers.csv").is_file() \
        else None


DATA = _data_dir()
realdata = pytest.mark.realdata
needs_data = pytest.mark.skipif(
    DATA is None, reason="England data not found: set GAPMODEL_DATA_DIR or provide "
                         "../shared/data beside the repository")
MAX_BUILD_SECONDS = 30.0


# -- sources, read independently of the builders -------------------------------------------

@pytest.fixture(scope="module")
def qof() -> pd.DataFrame:
    assert DATA is not None
    return pd.read_csv(DATA / "qof_2022_23_prevalence_by_practice_all_registers.csv")


@pytest.fixture(scope="module")
def mapping() -> pd.DataFrame:
    assert DATA is not None
    return pd.read_csv(DATA / "qof_2022_23_mapping_practice_pcn_subicb_icb_region.csv")


def _register_total(qof: pd.DataFrame, group: str) -> int:
    rows = qof[(qof["GROUP_CODE"] == group) & (qof["PATIENT_LIST_TYPE"] == "TOTAL")]
    return int(rows["REGISTER"].sum())


def _list_total(qof: pd.DataFrame, list_type: str) -> int:
    rows = qof[qof["PATIENT_LIST_TYPE"] == list_type].drop_duplicates("PRACTICE_CODE")
    return int(rows["PRACTICE_LIST_SIZE"].sum())


# -- datasets, built once per module -------------------------------------------------------

_TIMES: dict[str, float] = {}


def _build(name: str) -> Dataset:
    started = time.perf_counter()
    dataset = BUILDERS[name](DATA)
    _TIMES[name] = time.perf_counter() - started
    return dataset


@pytest.fixture(scope="module")
def hyp_pcn() -> Dataset:
    return _build("hypertension_pcn")


@pytest.fixture(scope="module")
def hyp_sub() -> Dataset:
    return _build("hypertension_subicb")


@pytest.fixture(scope="module")
def dem_pcn() -> Dataset:
    return _build("dementia_pcn")


@pytest.fixture(scope="module")
def hyp_cells():
    return pcn_cells(DATA, "HYP")


def _notes(dataset: Dataset) -> str:
    return "\n".join(p.message for p in dataset.report if p.rule == "harmonisation")


# -- registers -----------------------------------------------------------------------------

@realdata
@needs_data
def test_hypertension_register_totals_equal_qof(hyp_pcn, hyp_sub, qof):
    total = _register_total(qof, "HYP")
    assert total == 8_996_512
    for dataset in (hyp_pcn, hyp_sub):
        register = dataset.registers["register"]
        assert register["count"].astype(int).sum() == total
        assert (dataset.observations["censoring"] == "exact").all()
        assert int(dataset.observations["lo"].sum()) == total


@realdata
@needs_data
def test_dementia_register_is_its_65_plus_part(dem_pcn, qof):
    total = _register_total(qof, "DEM")
    assert total == 460_330
    register = dem_pcn.registers["register"]
    count = register["count"].astype(int)
    low, high = DEM_UNDER65_SHARE
    n = len(register)
    assert abs(count.sum() - total * (1 - (low + high) / 2)) <= n / 2 + 1
    assert total * (1 - high) < count.sum() < total * (1 - low)  # about 3% under 65
    assert (dem_pcn.observations["censoring"] == "exact").all()


# -- populations ---------------------------------------------------------------------------

@realdata
@needs_data
def test_scaled_population_equals_list_size_before_restriction(hyp_cells, qof):
    list_total = _list_total(qof, "TOTAL")
    assert round(list_total / 1e6, 2) == 62.38
    assert int(hyp_cells.areas["list_size"].sum()) == list_total
    assert hyp_cells.population.to_numpy().sum() == pytest.approx(list_total, abs=1.0)
    rows = hyp_cells.population.sum(axis=1)
    assert np.allclose(rows.to_numpy(), hyp_cells.areas["list_size"].to_numpy(), atol=1e-6)


@realdata
@needs_data
def test_restricted_populations_match_qof_age_lists(hyp_pcn, hyp_sub, dem_pcn, qof):
    over16, over50 = _list_total(qof, "16OV"), _list_total(qof, "50OV")
    for dataset in (hyp_pcn, hyp_sub):  # 16+ is calibrated to QOF's 16OV list sizes
        assert int(dataset.cells["population"].sum()) == over16
    over65 = int(dem_pcn.cells["population"].sum())
    assert 0.4 * over50 < over65 < 0.6 * over50
    assert 0.16 < over65 / _list_total(qof, "TOTAL") < 0.21


@realdata
@needs_data
def test_crude_recorded_prevalence_is_plausible(hyp_pcn, hyp_sub, dem_pcn):
    for dataset in (hyp_pcn, hyp_sub):
        crude = dataset.observations["lo"].sum() / dataset.cells["population"].sum()
        assert 0.14 < crude < 0.18
    by_sub = hyp_sub.observations["lo"].to_numpy() / hyp_sub.observations["population"]
    assert by_sub.between(0.08, 0.30).all()
    dem = dem_pcn.observations
    assert 0.03 < dem["lo"].sum() / dem_pcn.cells["population"].sum() < 0.05


@realdata
@needs_data
def test_pcn_and_sub_icb_datasets_have_the_same_cells(hyp_pcn, hyp_sub):
    pcn = hyp_pcn.cells.groupby(["sub_icb", "stratum"])["population"].sum()
    sub = hyp_sub.cells.set_index(["area", "stratum"])["population"]
    sub.index = sub.index.set_names(["sub_icb", "stratum"])
    diff = (pcn - sub.reindex(pcn.index)).abs()
    assert diff.max() <= 30  # integer rounding per PCN only
    assert diff.sum() / sub.sum() < 1e-4
    reg = hyp_pcn.registers["register"].merge(hyp_pcn.areas, on="area")
    per_sub = reg.groupby("sub_icb")["count"].apply(lambda s: s.astype(int).sum())
    sub_reg = hyp_sub.registers["register"].set_index("area")["count"].astype(int)
    assert (per_sub.sort_index() == sub_reg.sort_index()).all()


# -- areas ---------------------------------------------------------------------------------

@realdata
@needs_data
def test_pcn_areas_cover_every_practice_geography(hyp_pcn, dem_pcn, mapping):
    spans = mapping.groupby("PCN_ODS_CODE")["SUB_ICB_ONS_CODE"].nunique()
    split = set(spans.index[spans > 1]) | {"U"}
    keys = {(p if p not in split else f"{p}-{s}")
            for p, s in zip(mapping["PCN_ODS_CODE"], mapping["SUB_ICB_ONS_CODE"], strict=True)}
    for dataset in (hyp_pcn, dem_pcn):
        areas = dataset.areas
        assert set(areas["area"]) == keys
        assert len(areas) == 1311
        assert dataset.manifest.area_level == "pcn"
        assert dataset.levels == ("pcn", "sub_icb", "icb", "region")
        assert areas["sub_icb"].nunique() == 106
        assert areas["icb"].nunique() == mapping["ICB_ONS_CODE"].nunique() == 42
        assert areas["region"].nunique() == 7
        assert len(dataset.strata) == 12 and len(dataset.cells) == 12 * len(areas)
        assert areas["name"].ne("").all()
    pcns = set(mapping["PCN_ODS_CODE"]) - {"U"}
    assert len(pcns) == 1267
    covered = {a.split("-")[0] for a in hyp_pcn.areas["area"]}
    assert pcns <= covered
    unallocated = hyp_pcn.areas[hyp_pcn.areas["area"].str.startswith("U-")]
    expected = mapping.loc[mapping["PCN_ODS_CODE"] == "U", "SUB_ICB_ONS_CODE"].nunique()
    assert len(unallocated) == expected == 33
    assert "U-E38000247" in set(unallocated["area"])


@realdata
@needs_data
def test_sub_icbs_with_adjacency(hyp_sub, mapping):
    assert DATA is not None
    areas = set(hyp_sub.areas["area"])
    assert areas == set(mapping["SUB_ICB_ONS_CODE"]) and len(areas) == 106
    assert hyp_sub.manifest.area_level == "sub_icb"
    assert len(hyp_sub.cells) == 106 * 12
    source = pd.read_csv(DATA / "subicb22_england_adjacency.csv")
    adj = hyp_sub.adjacency
    assert len(adj) == len(source) == 257
    edges = {frozenset(e) for e in zip(adj["area1"], adj["area2"], strict=True)}
    assert edges == {frozenset(e) for e in zip(source["loc22cd1"], source["loc22cd2"],
                                                strict=True)}
    neighbours: dict[str, set[str]] = {a: set() for a in areas}
    for a, b in zip(adj["area1"], adj["area2"], strict=True):
        neighbours[a].add(b)
        neighbours[b].add(a)
    assert all(neighbours.values())  # every sub-ICB has a neighbour
    seen, queue = {next(iter(areas))}, deque([next(iter(areas))])
    while queue:
        for b in neighbours[queue.popleft()] - seen:
            seen.add(b)
            queue.append(b)
    assert seen == areas  # one connected component


# -- reference evidence --------------------------------------------------------------------

@realdata
@needs_data
def test_hse_reference_equals_source(hyp_pcn, hyp_sub):
    assert DATA is not None
    hse = pd.read_csv(DATA / "hse_2022_hypertension_prevalence_by_age_sex.csv", dtype=str)

    def pct(sex: str, group: str, band: str) -> float:
        value = hse.loc[(hse["Sex"] == sex) & (hse["Group"] == group), band].iloc[0]
        return 0.0 if value.strip() == "-" else float(value)

    for dataset in (hyp_pcn, hyp_sub):
        ref = dataset.reference.set_index(["ref_stratum", "measure"])
        assert len(ref) == 24
        for sex_name, sex in (("Men", "M"), ("Women", "F")):
            for band in ("16-34", "35-44", "45-54", "55-64", "65-74", "75+"):
                prev = ref.loc[(f"{band}|{sex}", "prevalence")]
                assert prev["n"] == HSE_N_PER_STRATUM
                assert prev["design_effect"] == HSE_DESIGN_EFFECT
                assert prev["y"] / prev["n"] == pytest.approx(
                    pct(sex_name, "All with hypertension", band) / 100)
                treated = ref.loc[(f"{band}|{sex}", "treated")]
                share = (pct(sex_name, "Hypertensive controlled", band)
                         + pct(sex_name, "Hypertensive uncontrolled", band)) \
                    / pct(sex_name, "All with hypertension", band)
                assert treated["n"] == prev["y"]
                assert treated["y"] / treated["n"] == pytest.approx(share, abs=0.5 / treated["n"])
                assert "HSE 2022" in prev["source"]
        assert (ref.loc[(slice(None), "treated"), "y"]
                <= ref.loc[(slice(None), "treated"), "n"]).all()
        mapping = dataset.reference_map
        assert (mapping["stratum"] == mapping["ref_stratum"]).all()
        assert "16-34|F" in set(mapping["stratum"])
    men_45 = hyp_pcn.reference.set_index(["ref_stratum", "measure"]).loc[("45-54|M", "treated")]
    assert men_45["y"] / men_45["n"] == pytest.approx(0.39, abs=0.01)  # MODEL.md's example


@realdata
@needs_data
def test_cfas_reference_equals_source(dem_pcn):
    assert DATA is not None
    cfas = pd.read_csv(DATA / "cfas2_dementia_prevalence_by_age_sex.csv")
    ref = dem_pcn.reference.set_index("ref_stratum")
    assert len(ref) == len(cfas) == 12
    assert (ref["measure"] == "prevalence").all() and (ref["kind"] == "rate").all()
    for row in cfas.itertuples():
        code = f"{row.age_band}|{'M' if row.sex == 'Male' else 'F'}"
        assert ref.loc[code, "rate"] == row.dementia_prevalence
        assert ref.loc[code, "lower"] == row.dementia_prevalence_95_lower
        assert ref.loc[code, "upper"] == row.dementia_prevalence_95_upper
    assert set(dem_pcn.strata["age_band"]) == {"65-69", "70-74", "75-79", "80-84", "85-89",
                                               "90+"}


# -- covariates, notes, round trip ---------------------------------------------------------

@realdata
@needs_data
def test_covariates_complete_and_from_sources(hyp_pcn, hyp_sub):
    assert DATA is not None
    for dataset in (hyp_pcn, hyp_sub):
        cov = dataset.covariates
        assert list(cov.columns) == ["imd_score", "pct_non_white"]
        assert cov.notna().all().all()
        assert cov["imd_score"].between(0, 100).all()
        assert cov["pct_non_white"].between(0, 100).all()
    imd = pd.read_csv(DATA / "pcn_imd2019_score_popweighted_2023.csv").set_index("pcn_code")
    whole = [a for a in hyp_pcn.covariates.index if a in imd.index]
    assert len(whole) > 1200
    assert np.allclose(hyp_pcn.covariates.loc[whole, "imd_score"],
                       imd.loc[whole, "imd_score"])


@realdata
@needs_data
def test_harmonisation_notes_are_reported(hyp_pcn, hyp_sub, dem_pcn):
    for dataset in (hyp_pcn, hyp_sub, dem_pcn):
        notes = _notes(dataset)
        for phrase in ("Unallocated practices", "not found", "2022 sub-ICB",
                       "Age calibration", "15-19", "Covariate imd_score",
                       "Covariate pct_non_white", "largest remainder", "Reference"):
            assert phrase in notes, phrase
        assert "62,378,057" in notes
    assert "16+" in _notes(hyp_pcn) and "all ages" in _notes(hyp_pcn)
    assert "HSE 2022" in _notes(hyp_pcn) and "design effect 1.5" in _notes(hyp_pcn)
    assert "under 65" in _notes(dem_pcn) and "460,330" in _notes(dem_pcn)
    assert "Aggregated" in _notes(hyp_sub) and "Adjacency" in _notes(hyp_sub)
    for dataset in (hyp_pcn, hyp_sub, dem_pcn):
        assert not [p for p in dataset.report if p.severity == "error"]
        assert dataset.manifest.sources


@realdata
@needs_data
@pytest.mark.parametrize("name", list(BUILDERS))
def test_round_trip_through_write_and_load(name, tmp_path, request):
    fixture = {"hypertension_pcn": "hyp_pcn", "hypertension_subicb": "hyp_sub",
               "dementia_pcn": "dem_pcn"}[name]
    dataset = request.getfixturevalue(fixture)
    loaded = load_dataset(dataset.write(tmp_path / name))
    assert loaded.hash == dataset.hash
    assert loaded.summary()["population"] == dataset.summary()["population"]


@realdata
@needs_data
def test_builders_are_fast(hyp_pcn, hyp_sub, dem_pcn):
    assert set(_TIMES) == set(BUILDERS)
    assert max(_TIMES.values()) < MAX_BUILD_SECONDS, _TIMES


# -- stand-ins: each builder's layout with made-up values -----------------------------------

def _layout(dataset: Dataset) -> dict:
    """What a model's form depends on, beyond the values: the strata, the hierarchy, the
    evidence's rows in order, the registers' and covariates' columns, the adjacency."""
    return {"strata": dataset.strata.to_dict("list"), "levels": dataset.levels,
            "attributes": dataset.attributes,
            "reference": dataset.reference[["ref_stratum", "measure", "kind"]].to_dict("list"),
            "reference_map": dataset.reference_map.to_dict("list"),
            "registers": {k: list(v.columns) for k, v in dataset.registers.items()},
            "censoring": sorted(dataset.observations["censoring"].unique()),
            "covariates": list(dataset.covariates.columns),
            "adjacency": len(dataset.adjacency) > 0}


@realdata
@needs_data
@pytest.mark.parametrize("name", list(BUILDERS))
def test_stand_in_has_its_builders_layout(name, request):
    from gapmodel.data.england.standin import stand_in

    real = request.getfixturevalue({"hypertension_pcn": "hyp_pcn",
                                    "hypertension_subicb": "hyp_sub",
                                    "dementia_pcn": "dem_pcn"}[name])
    fake = stand_in(name)
    assert _layout(fake) == _layout(real)
    assert 0.8 < len(fake.areas) / len(real.areas) < 1.2  # sizes decide some of the form


@realdata
@needs_data
@pytest.mark.slow
def test_stand_in_compiles_most_of_englands_operations(hyp_pcn):
    """The numba cache keys of the operations in the log density and gradient of England by
    PCN: most are those of its stand-in's, so compiling the stand-in compiles them (the
    rest embed values of the data: 8 of 89 when written)."""
    from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key

    from gapmodel.data.england.standin import stand_in
    from gapmodel.model import build_model
    from gapmodel.spec import ModelSpec

    spec = ModelSpec.from_yaml(Path(__file__).parents[1] / "models"
                               / "hypertension_england_pcn.yaml")

    def keys(dataset: Dataset) -> set[str]:
        model, _ = build_model(dataset, spec)
        function = model.logp_dlogp_function(model.value_vars, ravel_inputs=True)
        nodes = function._pytensor_function.maker.fgraph.toposort()
        return {numba_funcify_and_cache_key(node.op, node=node)[1] for node in nodes}

    england, fake = keys(hyp_pcn), keys(stand_in("hypertension_pcn"))
    assert len(england) > 50
    assert len(england & fake) >= 0.85 * len(england), len(england - fake)


def test_stand_ins_need_no_files(tmp_path, monkeypatch):
    from gapmodel.data.england.standin import NOTE, stand_in

    monkeypatch.setenv("GAPMODEL_DATA_DIR", str(tmp_path))
    for name in BUILDERS:
        dataset = stand_in(name, areas=240)
        assert dataset.name == f"{name}_stand_in"
        assert dataset.manifest.description.startswith("Stand-in (simulated values)")
        assert NOTE in dataset.notes
        assert len(dataset.areas) == (240 if name.endswith("pcn") else 20)
    with pytest.raises(ValueError, match="no stand-in for England builder 'asthma_pcn'"):
        stand_in("asthma_pcn")


# -- no data needed ------------------------------------------------------------------------

def test_missing_data_directory_names_the_variable(monkeypatch):
    monkeypatch.delenv("GAPMODEL_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="GAPMODEL_DATA_DIR"):
        BUILDERS["hypertension_pcn"](None)


def test_missing_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GAPMODEL_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError,
                       match=re.escape("qof_2022_23_prevalence_by_practice_all_registers.csv")):
        BUILDERS["dementia_pcn"]()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BUILDERS["hypertension_subicb"](tmp_path / "nowhere")


def test_largest_remainder_keeps_totals():
    rng = np.random.default_rng(1)
    values = rng.random((50, 7))
    values[3] = 0.0
    totals = rng.integers(0, 1000, 50)
    totals[3] = 0
    out = largest_remainder(values, totals)
    assert (out.sum(axis=1) == totals).all() and (out >= 0).all()
    exact = values / values.sum(axis=1, keepdims=True).clip(1e-12) * totals[:, None]
    assert (np.abs(out - exact) < 1).all()
    with pytest.raises(ValueError):
        largest_remainder(np.zeros((1, 3)), np.array([5]))
    assert math.isclose(largest_remainder(np.array([[1.0, 1.0, 1.0]]), np.array([2])).sum(), 2)
