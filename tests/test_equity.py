"""Equity: diagnosis-rate ratios per draw, and the slope and relative indices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from posterior_data import group_sums, make_view, summary

from gapmodel.fit import CellDraws
from gapmodel.posterior import PosteriorView, QueryError, equity, inequality
from gapmodel.posterior.equity import slope_index


def test_ratios_and_differences_per_draw_against_reference():
    view, cells, draws = make_view(n_draws=400, seed=11)
    table = equity(view, by="ethnicity", reference="Black", where="pcn == 'N2'", prob=0.8)
    keep = (cells["pcn"] == "N2").to_numpy()
    rate = {}
    for group in ("Black", "White"):
        mask = keep & (cells["ethnicity"] == group).to_numpy()
        rate[group] = group_sums(draws.recorded, mask) / group_sums(draws.expected, mask)
    row = table.set_index("ethnicity").loc["White"]
    want = summary(rate["White"] / rate["Black"], 0.8)
    assert [row[f"ratio_{k}"] for k in want] == pytest.approx(list(want.values()), rel=1e-5)
    diff = summary(rate["White"] - rate["Black"], 0.8)
    assert [row[f"difference_{k}"] for k in diff] == pytest.approx(list(diff.values()),
                                                                  rel=1e-4, abs=1e-7)
    assert row["p_ratio_below_1"] == pytest.approx(np.mean(rate["White"] < rate["Black"]))
    ref = table.set_index("ethnicity").loc["Black"]
    assert ref["reference"] and ref["ratio_mean"] == 1.0 and ref["p_ratio_below_1"] == 0.0
    assert table.attrs["reference"] == "Black" and table.attrs["prob"] == 0.8


def test_default_reference_is_the_largest_group():
    view, cells, _ = make_view()
    table = equity(view, by="sex")
    largest = cells.groupby("sex")["population"].sum().idxmax()
    assert table.attrs["reference"] == largest
    assert table.loc[table["reference"], "sex"].item() == largest


def test_equity_errors():
    view, _, _ = make_view()
    with pytest.raises(QueryError, match="reference 'Purple'"):
        equity(view, by="ethnicity", reference="Purple")
    with pytest.raises(QueryError, match="unknown column"):
        equity(view, by="religion")


def ordered_view(rates: np.ndarray, cases: np.ndarray) -> PosteriorView:
    """One area, one cell per quintile, with given diagnosis rates (groups x draws)."""
    groups = len(cases)
    cells = pd.DataFrame({"area": "A", "stratum": [f"q{i + 1}" for i in range(groups)],
                          "population": (cases * 3).astype(int),
                          "imd_quintile": [str(i + 1) for i in range(groups)]})
    expected = np.tile(cases, (rates.shape[1], 1)).astype(float)
    recorded = expected * rates.T
    zeros = np.zeros_like(expected)
    draws = CellDraws(*(a.astype(np.float32) for a in
                        (expected, recorded, expected - recorded, zeros, zeros)))
    return PosteriorView(cells, draws, attributes=["imd_quintile"])


def test_sii_recovers_a_linear_gradient_exactly():
    cases = np.array([100.0, 300.0, 200.0, 250.0, 150.0])
    share = cases / cases.sum()
    ridit = np.cumsum(share) - share / 2
    slope = np.array([0.10, 0.20, 0.15])
    intercept = np.array([0.50, 0.45, 0.55])
    rates = intercept[None, :] + slope[None, :] * ridit[:, None]
    view = ordered_view(rates, cases)
    table = inequality(view, "imd_quintile", prob=0.5)
    assert table.loc["sii", "mean"] == pytest.approx(slope.mean(), rel=1e-4)
    rii = (intercept + slope) / intercept
    assert table.loc["rii", "mean"] == pytest.approx(rii.mean(), rel=1e-4)
    assert table.loc["sii", "p_increasing"] == 1.0
    assert table.attrs["order"] == ["1", "2", "3", "4", "5"]
    reverse = inequality(view, "imd_quintile", order=["5", "4", "3", "2", "1"])
    assert reverse.loc["sii", "mean"] == pytest.approx(-slope.mean(), rel=1e-4)


def test_sii_is_weighted_least_squares_per_draw():
    rng = np.random.default_rng(3)
    cases = rng.uniform(50, 500, 5)
    rates = rng.uniform(0.4, 0.8, (5, 200))
    view = ordered_view(rates, cases)
    table = inequality(view, "imd_quintile")
    agg = view.aggregate(["imd_quintile"])
    share = agg.expected[:, 0] / agg.expected[:, 0].sum()
    ridit = np.cumsum(share) - share / 2
    slopes, ratios = [], []
    for d in range(rates.shape[1]):
        b, a = np.polyfit(ridit, agg.diagnosis_rate[:, d], 1, w=np.sqrt(share))
        slopes.append(b)
        ratios.append((a + b) / a)
    want = summary(np.array(slopes))
    assert [table.loc["sii", k] for k in want] == pytest.approx(list(want.values()),
                                                                rel=1e-6, abs=1e-9)
    assert table.loc["rii", "mean"] == pytest.approx(np.mean(ratios), rel=1e-6)


def test_slope_index_uses_per_draw_case_shares():
    rate = np.array([[0.5, 0.5], [0.7, 0.7]])
    cases = np.array([[100.0, 300.0], [300.0, 100.0]])
    sii, _ = slope_index(rate, cases)
    # the ridit gap between the two groups is 0.5 whatever the shares
    np.testing.assert_allclose(sii, [0.4, 0.4])


def test_order_may_name_groups_without_cells():
    view, _, _ = make_view(covariates=True)
    labels = view.labels("imd_decile")
    assert labels[:10] == [str(d) for d in range(1, 11)]
    present = view.aggregate(["imd_decile"]).keys["imd_decile"].tolist()
    assert len(present) < 10  # 6 areas cannot fill 10 deciles
    table = inequality(view, "imd_decile", order=labels[:10][::-1])
    assert table.attrs["order"] == sorted(present, key=int)[::-1]


def test_inequality_errors():
    view, _, _ = make_view()
    with pytest.raises(QueryError, match="order must list"):
        inequality(view, "age_band", order=["40-59"])
    with pytest.raises(QueryError, match="order must list"):
        inequality(view, "age_band", order=["40-59", "60-79", "90+"])
    with pytest.raises(QueryError, match="at least two groups"):
        inequality(view, "age_band", where="age_band == '40-59'")
