"""Outreach plans and top N: greedy allocation, per-draw optimal sets, equity weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from posterior_data import make_view

from gapmodel.fit import CellDraws
from gapmodel.posterior import PosteriorView, QueryError, plan, top_n
from gapmodel.posterior.targeting import p_optimal_contacts


def greedy(score: np.ndarray, room: np.ndarray, capacity: float) -> np.ndarray:
    """Reference allocation: a loop over units in descending score."""
    contacts = np.zeros(len(score))
    left = capacity
    for u in np.argsort(-score, kind="stable"):
        if left <= 0 or room[u] <= 0 or score[u] <= 0:
            continue
        contacts[u] = min(room[u], left)
        left -= contacts[u]
    return contacts


def per_draw_optimal(gain: np.ndarray, room: np.ndarray, capacity: float) -> np.ndarray:
    """Reference P(optimal): the greedy allocation redone in every draw."""
    chosen = [greedy(gain[:, d], room, capacity) > 0 for d in range(gain.shape[1])]
    return np.mean(chosen, axis=0)


def unit_arrays(view: PosteriorView, by: list[str], weights: np.ndarray | None = None):
    agg = view.aggregate(by, weights=weights)
    unregistered = np.maximum(agg.population[:, None] - agg.recorded, agg.undiagnosed)
    rate = agg.undiagnosed / unregistered
    return agg, unregistered, rate, np.floor(unregistered.mean(axis=1))


def constant_view(yields: list[float], unregistered: float = 100.0,
                  n_draws: int = 20) -> PosteriorView:
    n = len(yields)
    cells = pd.DataFrame({"area": [f"A{i}" for i in range(n)], "stratum": "s",
                          "population": np.full(n, 150), "pcn": "N"})
    recorded = np.full((n_draws, n), 150 - unregistered)
    undiagnosed = np.tile(np.array(yields) * unregistered, (n_draws, 1))
    zeros = np.zeros_like(recorded)
    draws = CellDraws(*(a.astype(np.float32) for a in
                        (recorded + undiagnosed, recorded, undiagnosed, zeros, zeros)))
    return PosteriorView(cells, draws)


def test_contacts_go_to_highest_yields_first():
    view = constant_view([0.1, 0.3, 0.2])
    result = plan(view, capacity=150, sensitivity=0.5)
    units = result.units
    assert units["area"].tolist() == ["A1", "A2"]
    assert units["contacts"].tolist() == [100, 50]
    np.testing.assert_allclose(units["found_mean"], [15.0, 5.0], rtol=1e-5)
    assert result.total["found"]["mean"] == pytest.approx(20.0, rel=1e-5)
    assert result.total["contacts"] == 150
    assert units["p_optimal"].tolist() == [1.0, 1.0]
    assert units["rank"].tolist() == [1, 2]


def test_plan_matches_reference_greedy_and_per_draw_optimum():
    view, _, _ = make_view(n_draws=200, seed=4)
    capacity = 1500
    result = plan(view, capacity=capacity, unit="area_stratum", sensitivity=0.8, prob=0.8)
    agg, _, rate, room = unit_arrays(view, ["area", "stratum"])
    contacts = greedy(rate.mean(axis=1), room, capacity)
    chosen = np.flatnonzero(contacts > 0)
    order = chosen[np.argsort(-rate[chosen].mean(axis=1), kind="stable")]
    units = result.units
    assert units["stratum"].tolist() == agg.keys["stratum"].iloc[order].tolist()
    assert units["area"].tolist() == agg.keys["area"].iloc[order].tolist()
    np.testing.assert_array_equal(units["contacts"], contacts[order])
    found = contacts[order, None] * rate[order] * 0.8
    np.testing.assert_allclose(units["found_mean"], found.mean(axis=1), rtol=1e-6)
    lo, hi = np.quantile(found.sum(axis=0), [0.1, 0.9])
    assert (result.total["found"]["lower"], result.total["found"]["upper"]) == \
        pytest.approx((lo, hi))
    reference = per_draw_optimal(rate, room, capacity)
    np.testing.assert_allclose(units["p_optimal"], reference[order])
    assert {"age_band", "sex", "ethnicity"} <= set(units.columns)
    assert units["contacts"].sum() == capacity


@pytest.mark.parametrize("capacity", [1, 40, 700, 5000, 10**6])
def test_pruned_per_draw_optimum_is_exact(capacity):
    rng = np.random.default_rng(capacity)
    gain = rng.gamma(2.0, 1.0, (300, 1)) * rng.lognormal(0, 0.3, (300, 60))
    gain[5] = 0.0
    room = rng.integers(0, 60, 300).astype(float)
    np.testing.assert_allclose(p_optimal_contacts(gain, room, capacity),
                               per_draw_optimal(gain, room, capacity))


def test_capacity_in_areas_picks_largest_expected_undiagnosed():
    view, _, _ = make_view(n_draws=200, seed=5)
    result = plan(view, capacity=2, capacity_unit="areas", level="practice")
    agg, _, _, room = unit_arrays(view, ["area"])
    value = agg.undiagnosed
    order = np.argsort(-value.mean(axis=1), kind="stable")[:2]
    units = result.units
    assert units["area"].tolist() == agg.keys["area"].iloc[order].tolist()
    np.testing.assert_array_equal(units["contacts"], room[order])
    top = np.argsort(-value, axis=0)[:2]
    p = np.array([(top == u).any(axis=0).mean() for u in order])
    np.testing.assert_allclose(units["p_optimal"], p)


def test_plan_by_pcn_and_area_stratum_under_pcn():
    view, cells, _ = make_view()
    result = plan(view, capacity=500, level="pcn")
    assert set(result.units["pcn"]) <= {"N1", "N2"}
    fine = plan(view, capacity=500, unit="area_stratum", level="pcn",
                where="age_band == '60-79'")
    assert set(fine.units["stratum"]) <= set(cells.loc[cells["age_band"] == "60-79",
                                                       "stratum"])
    assert list(fine.units.columns[:3]) == ["rank", "pcn", "stratum"]


def test_attribute_weights_rank_by_weighted_yield_but_report_people_found():
    view, cells, _ = make_view(n_draws=200, seed=6)
    spec = {"attribute": "ethnicity", "weights": {"Black": 3.0}}
    result = plan(view, capacity=800, equity=spec)
    w = np.where(cells["ethnicity"] == "Black", 3.0, 1.0)
    agg, unregistered, rate, room = unit_arrays(view, ["area"], weights=w)
    gain = agg.weighted_undiagnosed / unregistered
    contacts = greedy(gain.mean(axis=1), room, 800)
    chosen = np.flatnonzero(contacts > 0)
    order = chosen[np.argsort(-gain[chosen].mean(axis=1), kind="stable")]
    units = result.units
    assert units["area"].tolist() == agg.keys["area"].iloc[order].tolist()
    np.testing.assert_allclose(units["found_mean"],
                               (contacts[order, None] * rate[order]).mean(axis=1))
    np.testing.assert_allclose(units["p_optimal"], per_draw_optimal(gain, room, 800)[order])
    assert (units["weight"] > 1).all()
    stratum = plan(view, capacity=300, unit="area_stratum", equity=spec).units
    plain = plan(view, capacity=300, unit="area_stratum").units
    assert (stratum["ethnicity"] == "Black").mean() > (plain["ethnicity"] == "Black").mean()


def test_least_diagnosed_weights_units_by_their_diagnosis_rate():
    view, _, _ = make_view(n_draws=200, seed=8)
    result = plan(view, capacity=600, equity="least_diagnosed")
    agg, _, rate, room = unit_arrays(view, ["area"])
    overall = (agg.recorded.sum(axis=0) / agg.expected.sum(axis=0)).mean()
    weight = overall / (agg.recorded / agg.expected).mean(axis=1)
    gain = rate * weight[:, None]
    contacts = greedy(gain.mean(axis=1), room, 600)
    chosen = np.flatnonzero(contacts > 0)
    order = chosen[np.argsort(-gain[chosen].mean(axis=1), kind="stable")]
    assert result.units["area"].tolist() == agg.keys["area"].iloc[order].tolist()
    np.testing.assert_allclose(result.units["weight"], weight[order])
    assert result.to_dict()["equity"] == "least_diagnosed"


@pytest.mark.parametrize("by", ["undiagnosed", "yield_per_contact", "diagnosis_rate"])
def test_top_n_orders_by_mean_and_counts_per_draw_ranks(by):
    view, _, _ = make_view(n_draws=200, seed=9)
    table = top_n(view, 3, level="area", by=by)
    agg = view.aggregate(["area"])
    values = getattr(agg, by)
    sign = 1 if by == "diagnosis_rate" else -1
    order = np.argsort(sign * values.mean(axis=1), kind="stable")[:3]
    assert table["area"].tolist() == agg.keys["area"].iloc[order].tolist()
    top = np.argsort(sign * values, axis=0)[:3]
    p = np.array([(top == u).any(axis=0).mean() for u in order])
    np.testing.assert_allclose(table["p_top_n"], p)
    np.testing.assert_allclose(table[f"{by}_mean"], values[order].mean(axis=1))
    assert table.attrs["n"] == 3 and table.attrs["version"] == "v-test"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"capacity": 0}, "whole number of at least 1"),
    ({"capacity": 2.5}, "whole number"),
    ({"capacity": 10, "unit": "stratum"}, "unit is 'area' or 'area_stratum'"),
    ({"capacity": 10, "capacity_unit": "people"}, "capacity_unit"),
    ({"capacity": 10, "level": "ethnicity"}, "not an area level"),
    ({"capacity": 10, "level": "nowhere"}, "unknown column"),
    ({"capacity": 10, "sensitivity": 0}, "sensitivity"),
    ({"capacity": 10, "equity": "fairest"}, "equity is None"),
    ({"capacity": 10, "equity": {"attribute": "ethnicity"}}, "exactly 'attribute'"),
    ({"capacity": 10, "equity": {"attribute": "ethnicity", "weights": {"Green": 2}}},
     "unknown value 'Green'"),
    ({"capacity": 10, "equity": {"attribute": "ethnicity", "weights": {"Black": -1}}},
     "non-negative"),
    ({"capacity": 10, "where": "sex == 'X'"}, "unknown value"),
])
def test_plan_errors_are_clear(kwargs, message):
    view, _, _ = make_view()
    with pytest.raises(QueryError, match=message):
        plan(view, **kwargs)


def test_top_n_errors():
    view, _, _ = make_view()
    with pytest.raises(QueryError, match="ranks by one of"):
        top_n(view, 3, by="population")
    with pytest.raises(QueryError, match="whole number"):
        top_n(view, 0)
