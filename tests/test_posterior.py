"""Estimates: per-draw aggregation against brute force, filters, errors, registry."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny
from posterior_data import group_sums, make_view, random_draws, summary

from gapmodel.data import load_dataset
from gapmodel.fit import CellDraws, FitResult
from gapmodel.posterior import PosteriorView, QueryError, estimates
from gapmodel.registry import Registry
from gapmodel.spec import ModelSpec
from gapmodel.summary import totals

STATS = ("mean", "sd", "lower", "upper")


def brute_force(draws: CellDraws, population: np.ndarray, mask: np.ndarray
                ) -> dict[str, np.ndarray]:
    recorded = group_sums(draws.recorded, mask)
    undiagnosed = group_sums(draws.undiagnosed, mask)
    expected = group_sums(draws.expected, mask)
    unregistered = np.maximum(population[mask].sum() - recorded, undiagnosed)
    return {"expected": expected, "recorded": recorded, "undiagnosed": undiagnosed,
            "diagnosis_rate": recorded / expected,
            "yield_per_contact": undiagnosed / unregistered}


def check_row(row: pd.Series, expected: dict[str, np.ndarray], prob: float = 0.9) -> None:
    """Equal up to float32 rounding of the sums (relative to their size, so an sd much
    smaller than its mean is compared on the mean's scale)."""
    for name, values in expected.items():
        want = summary(values, prob)
        got = {k: row[f"{name}_{k}"] for k in STATS}
        np.testing.assert_allclose([got[k] for k in STATS], [want[k] for k in STATS],
                                   rtol=1e-6, atol=1e-6 * np.abs(values).max(),
                                   err_msg=name)


def test_by_pcn_matches_brute_force_per_draw_sums():
    view, cells, draws = make_view()
    table = estimates(view, by="pcn", prob=0.8)
    assert list(table["pcn"]) == ["N1", "N2"]
    population = cells["population"].to_numpy()
    for _, row in table.iterrows():
        mask = (cells["pcn"] == row["pcn"]).to_numpy()
        assert row["cells"] == mask.sum() and row["population"] == population[mask].sum()
        check_row(row, brute_force(draws, population, mask), prob=0.8)
    assert table.attrs["version"] == "v-test" and table.attrs["prob"] == 0.8


def test_total_agrees_with_fit_summary_totals():
    view, _, draws = make_view()
    row = estimates(view).iloc[0]
    reference = totals(draws)
    for name in ("expected", "recorded", "undiagnosed", "diagnosis_rate"):
        for stat in ("mean", "lower", "upper"):
            assert row[f"{name}_{stat}"] == pytest.approx(reference[name][stat], rel=1e-5)


def test_groups_by_two_columns_with_filters():
    view, cells, draws = make_view()
    where = "age_band == '60-79' and sex in ['F']"
    table = estimates(view, by=["pcn", "ethnicity"], where=where, areas=["A1", "A2", "A5"])
    same = estimates(view, by=["pcn", "ethnicity"],
                     where={"age_band": "60-79", "sex": ["F"]}, areas=["A1", "A2", "A5"])
    pd.testing.assert_frame_equal(table, same)
    keep = ((cells["age_band"] == "60-79") & (cells["sex"] == "F")
            & cells["area"].isin(["A1", "A2", "A5"])).to_numpy()
    population = cells["population"].to_numpy()
    assert len(table) == 4
    for _, row in table.iterrows():
        mask = keep & (cells["pcn"] == row["pcn"]).to_numpy() \
            & (cells["ethnicity"] == row["ethnicity"]).to_numpy()
        check_row(row, brute_force(draws, population, mask))


def test_chunks_of_groups_match_one_aggregate():
    view, _, _ = make_view(n_draws=100)
    whole = view.aggregate(["area", "stratum"])
    chunks = list(view.aggregate_chunks(["area", "stratum"], max_values=700))
    assert len(chunks) == -(-whole.n_groups // 7) and all(c.n_groups <= 7 for c in chunks)
    pd.testing.assert_frame_equal(pd.concat([c.keys for c in chunks], ignore_index=True),
                                  whole.keys)
    for name in ("recorded", "undiagnosed"):
        np.testing.assert_array_equal(np.concatenate([getattr(c, name) for c in chunks]),
                                      getattr(whole, name))
    np.testing.assert_array_equal(np.concatenate([c.population for c in chunks]),
                                  whole.population)


def test_expression_forms_agree():
    view, cells, _ = make_view()
    forms = ["not (ethnicity != 'Black') & (age_band == '40-59' | age_band == '60-79')",
             "'Black' == ethnicity and age_band in ('40-59', '60-79')",
             "~(ethnicity in ['White'])"]
    masks = [view.select(text) for text in forms]
    want = (cells["ethnicity"] == "Black").to_numpy()
    for mask in masks:
        np.testing.assert_array_equal(mask, want)


def test_joint_intervals_are_not_sums_of_intervals():
    """Two areas whose undiagnosed counts trade off draw by draw: their sum is almost
    certain, though each alone is not; adding the areas' intervals would say otherwise."""
    cells = pd.DataFrame({"area": ["A", "B"], "stratum": ["s", "s"],
                          "population": [1000, 1000], "pcn": ["N", "N"]})
    z = np.random.default_rng(1).normal(0, 20, 500)
    undiagnosed = np.column_stack([100 + z, 100 - z])
    recorded = np.full_like(undiagnosed, 300.0)
    nan = np.zeros_like(undiagnosed)
    draws = CellDraws(*(a.astype(np.float32) for a in
                        (recorded + undiagnosed, recorded, undiagnosed, nan, nan)))
    view = PosteriorView(cells, draws)
    by_area = estimates(view, by="area")
    total = estimates(view, by="pcn").iloc[0]
    summed = by_area["undiagnosed_upper"].sum() - by_area["undiagnosed_lower"].sum()
    joint = total["undiagnosed_upper"] - total["undiagnosed_lower"]
    assert joint == pytest.approx(0.0, abs=1e-3)
    assert summed > 100
    assert total["undiagnosed_mean"] == pytest.approx(by_area["undiagnosed_mean"].sum())


def test_yield_number_needed_to_screen_and_exceedance():
    view, cells, draws = make_view()
    table = estimates(view, by="area", exceed=[10, 25.5])
    population = cells["population"].to_numpy()
    for _, row in table.iterrows():
        mask = (cells["area"] == row["area"]).to_numpy()
        ref = brute_force(draws, population, mask)
        rate = ref["yield_per_contact"]
        lo, hi = np.quantile(rate, [0.05, 0.95])
        assert row["number_needed_to_screen_lower"] == pytest.approx(1 / hi)
        assert row["number_needed_to_screen_upper"] == pytest.approx(1 / lo)
        assert row["number_needed_to_screen_mean"] == pytest.approx(np.mean(1 / rate))
        for k in (10, 25.5):
            label = f"p_undiagnosed_gt_{k:g}"
            assert row[label] == pytest.approx(np.mean(ref["undiagnosed"] > k))


def test_level_alias_and_covariate_deciles():
    view, cells, draws = make_view(covariates=True)
    pd.testing.assert_frame_equal(estimates(view, by="practice").drop(columns="area"),
                                  estimates(view, by="area").drop(columns="area"))
    high = estimates(view, where="imd > 0.5").iloc[0]
    mask = cells["area"].isin(["A1", "A2", "A6"]).to_numpy()
    assert high["undiagnosed_mean"] == pytest.approx(
        group_sums(draws.undiagnosed, mask).mean())
    deciles = estimates(view, by="imd_decile")
    assert deciles["imd_decile"].tolist() == sorted(deciles["imd_decile"], key=int)
    assert deciles["population"].sum() == cells["population"].sum()
    # the area with the lowest imd (A5) is in the lowest decile
    lowest = view.select({"imd_decile": deciles["imd_decile"].iloc[0]})
    assert set(cells.loc[lowest, "area"]) == {"A5"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"by": "colour"}, "unknown column 'colour'"),
    ({"by": ["pcn", "pcn"]}, "named twice"),
    ({"where": "colour == 'red'"}, "unknown column 'colour'"),
    ({"where": "ethnicity == 'Purple'"}, "unknown value.*'Purple'.*ethnicity"),
    ({"where": {"sex": ["F", "X"]}}, "unknown value.*'X'"),
    ({"where": "ethnicity == 'Black' and area == 'A1' and age_band == '60-79' "
               "and sex == 'F'"}, "selection is empty"),
    ({"areas": ["A1", "Z9"]}, "unknown area code.*Z9"),
    ({"where": "ethnicity =="}, "cannot read the filter"),
    ({"where": "__import__('os').system('true')"}, "unsupported filter expression"),
    ({"where": "ethnicity.upper() == 'BLACK'"}, "one column and literal values"),
    ({"where": "age_band > '40-59'"}, "needs a numeric column"),
    ({"where": "sex in 'F'"}, "needs a list"),
    ({"where": "sex == age_band"}, "one column and literal values"),
    ({"where": "population > 'x'"}, "compare it with numbers"),
    ({"by": "population"}, "is numeric"),
    ({"prob": 1.5}, "between 0 and 1"),
])
def test_query_errors_are_clear(kwargs, message):
    view, _, _ = make_view()
    with pytest.raises(QueryError, match=message):
        estimates(view, **kwargs)


def test_query_error_is_a_value_error():
    assert issubclass(QueryError, ValueError)


# -- registry ------------------------------------------------------------------------------

TINY_SPEC = {"name": "tiny", "condition": "test",
             "data": {"kind": "directory", "path": "unused"},
             "detection": {"area": {"type": "iid", "centered": False}}, "missing": {}}


def fake_result(dataset) -> FitResult:
    spec = ModelSpec.model_validate(TINY_SPEC)
    draws = random_draws(dataset.cells, n_draws=50, seed=3)
    return FitResult(spec=spec, dataset_hash=dataset.hash, idata=None,
                     diagnostics=pd.DataFrame({"mean": [0.0]}, index=["gamma0"]),
                     gate={"passed": False, "failures": ["not sampled"]}, draws=draws)


def test_registry_keeps_area_covariates_and_loads_versions_without_them(tmp_path: Path):
    dataset = load_dataset(write_tiny(tmp_path / "tiny"))
    store = Registry(tmp_path / "registry")
    version_id = store.save(fake_result(dataset), dataset, save_posterior=False)
    version = store.load(version_id)
    pd.testing.assert_frame_equal(version.covariates, dataset.covariates,
                                  check_index_type=False)
    assert "covariates.parquet" in version.meta["files"]
    view = PosteriorView.from_version(version)
    assert view.aliases == {"practice": "area"}
    table = estimates(view, by="practice", where="imd_decile in [1, 2, 3, 4, 5]")
    assert table.attrs["version"] == version_id
    assert list(table["area"]) == ["P3"]  # imd -1 (P3) is below 0.2 and 1.5
    # a version saved before covariates were kept: no file, no entry in meta.json
    path = store.find(version_id)
    (path / "covariates.parquet").unlink()
    meta = json.loads((path / "meta.json").read_text())
    del meta["files"]["covariates.parquet"]
    (path / "meta.json").write_text(json.dumps(meta))
    old = store.load(version_id)
    assert old.covariates is None
    assert "imd_decile" not in PosteriorView.from_version(old).columns()


# -- command line --------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> tuple[Path, str]:
    dataset = load_dataset(write_tiny(tmp_path / "tiny"))
    store = Registry(tmp_path / "registry")
    version_id = store.save(fake_result(dataset), dataset, save_posterior=False)
    store.promote(version_id, force=True, reason="command line tests")
    return store.root, version_id


def run(*args: str):
    from typer.testing import CliRunner

    from gapmodel.cli import app

    return CliRunner().invoke(app, list(args))


def test_cli_estimates_csv_json_and_parquet(registry, tmp_path: Path):
    root, version_id = registry
    result = run("estimates", "--registry", str(root), "--level", "pcn",
                 "--where", "sex == 'F'", "--exceed", "5")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table["pcn"]) == ["N1", "N2"] and "p_undiagnosed_gt_5" in table
    assert version_id in result.stderr
    result = run("estimates", version_id, "--registry", str(root), "--format", "json")
    payload = json.loads(result.stdout)
    assert payload["version"] == version_id and payload["prob"] == 0.9
    assert len(payload["rows"]) == 1
    out = tmp_path / "by_area.parquet"
    result = run("estimates", "--model", "tiny", "--registry", str(root), "--by", "practice",
                 "--by", "sex", "--format", "parquet", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == 6


def test_cli_targets_and_equity(registry):
    root, _ = registry
    result = run("targets", "--registry", str(root), "--capacity", "40",
                 "--unit", "area_stratum", "--equity", "sex:M=2", "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["total"]["contacts"] == sum(r["contacts"] for r in payload["rows"]) <= 40
    assert payload["equity"] == {"attribute": "sex", "weights": {"M": 2.0}}
    result = run("targets", "--registry", str(root), "--capacity", "2",
                 "--capacity-unit", "areas")
    assert result.exit_code == 0, result.output
    assert "contacts find" in result.stderr
    result = run("equity", "--registry", str(root), "--by", "sex", "--reference", "F",
                 "--inequality", "--format", "json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["reference"] == "F" and payload["inequality"]["order"] == ["F", "M"]
    assert "SII" in result.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (("estimates", "--where", "colour == 'red'"), 2, "unknown column 'colour'"),
    (("estimates", "--where", "sex =="), 2, "cannot read the filter"),
    (("estimates", "no-such-version"), 1, "no version 'no-such-version'"),
    (("estimates", "--model", "other"), 1, "no active version"),
    (("estimates", "--format", "parquet"), 2, "needs --out"),
    (("targets", "--capacity", "10", "--equity", "sex"), 2, "--equity is"),
    (("targets", "--capacity", "10", "--level", "sex"), 2, "not an area level"),
    (("equity", "--by", "sex", "--reference", "X"), 2, "reference 'X'"),
])
def test_cli_errors_are_messages_not_tracebacks(registry, args, code, message):
    root, _ = registry
    result = run(*args, "--registry", str(root))
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
