"""Disclosure control: the pure function, and what a viewer and an analyst see."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from api_support import MODEL, make_version, start_env

from api.disclosure import Policy, disclose
from gapmodel.posterior import PosteriorView, estimates
from gapmodel.registry import Registry


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in columns.items()})


def test_small_counts_are_withheld_and_the_rest_rounded():
    table = frame(undiagnosed_mean=[0.0, 0.4, 0.6, 3.0, 7.4, 7.6, 12.0, 13.0, 1234.0],
                  undiagnosed_sd=[0.1] * 9)
    out = disclose(table)
    assert out["undiagnosed_mean"].tolist()[:2] == [0.0, 0.0]
    assert out["undiagnosed_mean"].isna().tolist() == [False, False, True, True, True,
                                                       False, False, False, False]
    assert out["undiagnosed_mean"].tolist()[5:] == [10.0, 10.0, 15.0, 1235.0]
    assert out["suppressed"].tolist() == [False, False, True, True, True, False, False,
                                          False, False]
    assert out["rounded"].tolist() == [True, True, False, False, False, True, True, True,
                                       True]
    # the sd goes with its mean, and is never rounded
    assert out["undiagnosed_sd"].isna().tolist() == out["undiagnosed_mean"].isna().tolist()
    assert out.loc[8, "undiagnosed_sd"] == pytest.approx(0.1)
    # the input is left as it was
    assert table["undiagnosed_mean"].iloc[3] == 3.0 and "suppressed" not in table


def test_interval_bounds_are_controlled_one_by_one():
    out = disclose(frame(expected_mean=[40.0], expected_lower=[3.0], expected_upper=[92.0]))
    assert out["expected_mean"].iloc[0] == 40 and out["expected_upper"].iloc[0] == 90
    assert np.isnan(out["expected_lower"].iloc[0])
    assert out["suppressed"].iloc[0] and out["rounded"].iloc[0]


def test_rates_are_kept_and_flagged_when_their_numerator_is_withheld():
    table = frame(recorded_mean=[5.0, 50.0], undiagnosed_mean=[20.0, 2.0],
                  diagnosis_rate_mean=[0.2, 0.96], yield_per_contact_mean=[0.01, 0.001])
    out = disclose(table)
    np.testing.assert_array_equal(out["diagnosis_rate_mean"], table["diagnosis_rate_mean"])
    assert out["rate_flagged"].tolist() == [True, True]
    only_rate = disclose(frame(recorded_mean=[50.0], undiagnosed_mean=[20.0],
                               diagnosis_rate_mean=[0.7]))
    assert not only_rate["rate_flagged"].iloc[0]
    # no numerator in the table (equity): any withheld count flags the rates
    equity = disclose(frame(expected_mean=[6.0], ratio_mean=[0.9]))
    assert equity["rate_flagged"].iloc[0]


def test_the_policy_is_configurable_and_plain_counts_are_controlled():
    policy = Policy(low=1, high=10, base=10)
    out = disclose(frame(found_mean=[9.0, 11.0, 26.0], unregistered=[4.0, 144.0, 0.0],
                         contacts=[4.0, 144.0, 0.0]), policy)
    assert out["found_mean"].isna().tolist() == [True, False, False]
    assert out["found_mean"].tolist()[1:] == [10.0, 30.0]
    assert out["unregistered"].isna().tolist() == [True, False, False]
    assert out["unregistered"].tolist()[1:] == [140.0, 0.0]
    with pytest.raises(ValueError):
        Policy(base=0)


def test_untouched_columns_and_nan_pass_through():
    table = pd.DataFrame({"pcn": ["N1", "N2"], "population": [12, 3],
                          "undiagnosed_mean": [np.nan, 100.0]})
    out = disclose(table)
    assert out["pcn"].tolist() == ["N1", "N2"] and out["population"].tolist() == [12, 3]
    assert np.isnan(out["undiagnosed_mean"].iloc[0]) and not out["suppressed"].iloc[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api_disclosure")
    version = make_version(tmp / "registry", small=True, seed=4)
    Registry(tmp / "registry").promote(version.id)
    with start_env(tmp, {"active": version}) as env:
        yield env


COUNTS = [f"{m}_{s}" for m in ("expected", "recorded", "undiagnosed")
          for s in ("mean", "lower", "upper")]


def flat(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{**r["group"], **{f"{m}_{s}": r[m][s] for m in
                                           ("expected", "recorded", "undiagnosed",
                                            "diagnosis_rate")
                                           for s in ("mean", "sd", "lower", "upper")},
                          "suppressed": r["suppressed"], "rounded": r["rounded"],
                          "rate_flagged": r["rate_flagged"]} for r in rows])


def test_a_viewer_sees_controlled_counts_and_an_analyst_exact_ones(small):
    params = {"level": "area,stratum", "page_size": 5000}
    url = f"/v1/models/{MODEL}/estimates"
    viewer = small.get(url, role="viewer", params=params).json()
    analyst = small.get(url, role="analyst", params=params).json()
    assert viewer["disclosure"]["applied"] and not analyst["disclosure"]["applied"]
    shown, exact = flat(viewer["rows"]), flat(analyst["rows"])
    want = estimates(PosteriorView.from_version(small.versions["active"]),
                     by=["area", "stratum"])
    np.testing.assert_allclose(exact["undiagnosed_mean"], want["undiagnosed_mean"])
    assert not exact[["suppressed", "rounded", "rate_flagged"]].to_numpy().any()
    values = shown[COUNTS].to_numpy(float)
    known = np.isfinite(values)
    assert (values[known] % 5 == 0).all()
    hidden = ~known
    raw = np.rint(exact[COUNTS].to_numpy(float))
    assert hidden.any(), "the small version should have counts of 1 to 7"
    assert ((raw[hidden] >= 1) & (raw[hidden] <= 7)).all()
    assert ((raw[known] < 1) | (raw[known] > 7)).all()
    assert shown["suppressed"].tolist() == hidden.any(axis=1).tolist()
    # rates stay, flagged where their numerator (recorded) is withheld
    np.testing.assert_allclose(shown["diagnosis_rate_mean"], exact["diagnosis_rate_mean"])
    recorded_hidden = shown[["recorded_mean", "recorded_lower",
                             "recorded_upper"]].isna().any(axis=1)
    assert (shown["rate_flagged"] >= recorded_hidden).all()
    text = small.get(url, role="viewer", params={**params, "format": "csv"}).text
    assert "suppressed" in text.splitlines()[0]


def test_plans_and_equity_are_controlled_for_outreach(small):
    plan = small.post(f"/v1/models/{MODEL}/targets", role="outreach",
                      json={"capacity": 300, "unit": "area_stratum"}).json()
    found = [u["found"]["mean"] for u in plan["units"]]
    assert all(v is None or v % 5 == 0 for v in found)
    assert any(u["suppressed"] for u in plan["units"])
    total = plan["total"]["found"]["mean"]
    assert total is None or total % 5 == 0
    equity = small.get(f"/v1/models/{MODEL}/equity", role="viewer",
                       params={"by": "ethnicity", "where": "area == 'P001'"}).json()
    assert equity["disclosure"]["applied"]
    assert all(r["expected"]["mean"] is None or r["expected"]["mean"] % 5 == 0
               for r in equity["rows"])


def test_disclosure_can_be_switched_off_or_retuned(tmp_path):
    version = make_version(tmp_path / "registry", small=True, seed=4)
    Registry(tmp_path / "registry").promote(version.id)
    url = f"/v1/models/{MODEL}/estimates"
    with start_env(tmp_path, {"active": version}, disclosure_enabled=False) as env:
        body = env.get(url, role="viewer", params={"level": "stratum"}).json()
        assert not body["disclosure"]["applied"]
        assert not any(r["rounded"] for r in body["rows"])
    with start_env(tmp_path, {"active": version}, disclosure_round=10,
                   disclosure_exempt_role="admin",
                   database_url=f"sqlite:///{tmp_path / 'other.db'}") as env:
        body = env.get(url, role="analyst", params={"level": "stratum"}).json()
        assert body["disclosure"]["applied"] and body["disclosure"]["round_to"] == 10
        assert all(r["undiagnosed"]["mean"] % 10 == 0 for r in body["rows"]
                   if r["undiagnosed"]["mean"] is not None)
