"""The analyst report: section numbers against hand-built draws, the HTML's content, the
CLI, and (marked `browser`) the page as headless Chromium renders it."""

from __future__ import annotations

import os
import re
from html import unescape
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from gapmodel.cli import app
from gapmodel.fit import CellDraws, FitResult, diagnose
from gapmodel.posterior import PosteriorView, equity, inequality, top_n
from gapmodel.registry import Registry, Version
from gapmodel.report import build_report, build_sections, compute
from gapmodel.report.build import SECTIONS
from gapmodel.report.html import count, pct
from gapmodel.spec import ModelSpec
from gapmodel.summary import totals

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("GAPMODEL_TEST_ARTIFACTS",
                                Path(__file__).parent / "artifacts"))
CHAINS, DRAWS = 2, 100

SYNTHETIC_SPEC = {
    "name": "report_synthetic", "condition": "hypertension (test)",
    "description": "Practices by age band, sex, ethnicity and deprivation.",
    "data": {"kind": "directory", "path": "unused"},
    "prevalence": {"covariates": {"imd_score": {"mu": 0.1, "sigma": 0.05}}, "sigma_eps": 0.1},
    "detection": {"groups": {"sex": {"type": "free", "pooled": False},
                             "ethnicity": {"type": "free"}},
                  "area": {"type": "bym2", "centered": True}},
    "missing": {},
    "sampler": {"chains": CHAINS, "tune": DRAWS, "draws": DRAWS, "seed": 5},
    "derived_draws": CHAINS * DRAWS,
}


def expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_cells(areas: pd.DataFrame, strata: pd.DataFrame, rng: np.random.Generator
               ) -> pd.DataFrame:
    """Every area x stratum, populations drawn, in the registry's column order."""
    cells = areas.merge(strata, how="cross")
    cells["population"] = rng.integers(50, 2000, len(cells))
    attrs = [c for c in strata.columns if c != "stratum"]
    parents = [c for c in areas.columns if c != "area"]
    return cells[["area", "stratum", "population", *attrs, *parents]]


def make_draws(cells: pd.DataFrame, rng: np.random.Generator, registers: str,
               unobserved: tuple[str, ...] = ()) -> CellDraws:
    """Joint draws shaped like `gapmodel.fit.derive` output: per-cell register counts
    ('cells') or one total per area shared in proportion to N pi theta ('totals'); cells of
    `unobserved` areas get a predictive recorded draw."""
    n_draws, n = CHAINS * DRAWS, len(cells)
    pop = cells["population"].to_numpy(float)
    area_code = pd.factorize(cells["area"])[0]
    u = rng.normal(0, 0.4, area_code.max() + 1)[area_code]
    base_pi = rng.normal(-1.2, 0.3, n)
    pi = expit(base_pi[None, :] + rng.normal(0, 0.05, (n_draws, 1))
               + rng.normal(0, 0.02, (n_draws, n)))
    theta = expit(0.5 + u[None, :] + rng.normal(0, 0.08, (n_draws, 1))
                  + rng.normal(0, 0.05, (n_draws, n)))
    truth = rng.binomial(pop.astype(int), expit(base_pi) * expit(0.5 + u)).astype(float)
    found = pop[None, :] * pi * theta
    if registers == "cells":
        recorded = np.broadcast_to(truth, (n_draws, n)).copy()
    else:
        area_total = np.bincount(area_code, weights=truth)
        found_area = np.zeros((n_draws, area_code.max() + 1))
        np.add.at(found_area.T, area_code, found.T)
        recorded = area_total[area_code][None, :] * found / found_area[:, area_code]
    hidden = cells["area"].isin(unobserved).to_numpy()
    recorded[:, hidden] = rng.binomial(pop[hidden].astype(int), (pi * theta)[:, hidden])
    q = pi * (1 - theta) / (1 - pi * theta)
    undiagnosed = rng.binomial(np.clip(np.rint(pop - recorded), 0, None).astype(int), q)
    f32 = np.float32
    return CellDraws(expected=(recorded + undiagnosed).astype(f32),
                     recorded=recorded.astype(f32), undiagnosed=undiagnosed.astype(f32),
                     pi=pi.astype(f32), theta=theta.astype(f32))


def make_idata(rng: np.random.Generator, strata: list[str], mixing: bool,
               with_stats: bool = True) -> xr.DataTree:
    """A posterior with monitored parameters; `mixing=False` separates the chains."""
    shape = (CHAINS, DRAWS)
    gamma0 = rng.normal(0.5, 0.1, shape) + (0 if mixing else np.array([[0.0], [0.5]]))
    posterior = xr.Dataset({
        "gamma0": (("chain", "draw"), gamma0),
        "sigma_u": (("chain", "draw"), np.abs(rng.normal(0.3, 0.02, shape))),
        "alpha": (("chain", "draw", "ref_stratum"), rng.normal(-1, 0.1, (*shape, len(strata)))),
    }, coords={"ref_stratum": strata})
    groups = {"posterior": posterior}
    if with_stats:
        groups["sample_stats"] = xr.Dataset({
            "diverging": (("chain", "draw"), np.arange(CHAINS * DRAWS).reshape(shape) == 7),
            "energy": (("chain", "draw"), rng.normal(0, 1, shape).cumsum(axis=1) * 0.1
                       + rng.normal(0, 1, shape))})
    return xr.DataTree.from_dict(groups)


def save_version(root: Path, spec: ModelSpec, cells: pd.DataFrame, draws: CellDraws,
                 idata: xr.DataTree, *, summary: dict, method: str = "nuts",
                 save_posterior: bool = True, covariates: bool = True) -> Version:
    """A registry version made as `gapmodel fit` makes one, with the sampling mocked;
    with `covariates`, a raw area deprivation score."""
    total_gap = draws.undiagnosed.sum(axis=1, dtype=np.float64).reshape(CHAINS, DRAWS)
    table, gate = diagnose(idata, total_gap, spec)
    result = FitResult(spec=spec, dataset_hash="0" * 64, idata=idata, diagnostics=table,
                       gate=gate, draws=draws, timings={"sample": 1.0}, method=method)
    areas = pd.Index(pd.unique(cells["area"]), name="area")
    scores = {"imd_score": np.linspace(5, 50, len(areas))} if covariates else {}
    dataset = SimpleNamespace(cells=cells, hash="0" * 64, name=f"{spec.name}_data",
                              covariates=pd.DataFrame(scores, index=areas),
                              summary=lambda: {"name": f"{spec.name}_data", **summary})
    store = Registry(root)
    return store.load(store.save(result, dataset, save_posterior=save_posterior))


def synthetic_version(root: Path, *, method: str = "nuts", save_posterior: bool = True,
                      mixing: bool = False, seed: int = 1) -> Version:
    """12 practices x age band x sex x ethnicity x deprivation, per-cell registers, one
    practice (P12) with cells no register observes; chains that do not mix by default."""
    rng = np.random.default_rng(seed)
    areas = pd.DataFrame({"area": [f"P{i:02d}" for i in range(1, 13)],
                          "pcn": [f"N{i // 4 + 1}" for i in range(12)], "icb": "I1"})
    rows = [(f"{a}|{s}|{e}|{d}", a, s, e, d) for a in ("40-59", "60+") for s in ("F", "M")
            for e in ("White", "Asian", "Black") for d in ("1", "5")]
    strata = pd.DataFrame(rows, columns=["stratum", "age_band", "sex", "ethnicity",
                                         "imd_quintile"])
    cells = make_cells(areas, strata, rng)
    draws = make_draws(cells, rng, "cells", unobserved=("P12",))
    spec = ModelSpec.model_validate(SYNTHETIC_SPEC)
    idata = make_idata(rng, ["40-59|F", "40-59|M", "60+|F", "60+|M"], mixing)
    summary = {"levels": {"practice": 12, "pcn": 3, "icb": 1}, "reference_rows": 4,
               "attributes": {c: sorted(strata[c].unique()) for c in strata.columns[1:]},
               "censoring": {"exact": 100}}
    return save_version(root, spec, cells, draws, idata, summary=summary, method=method,
                        save_posterior=save_posterior)


def england_like_version(root: Path, seed: int = 2, covariates: bool = True,
                         n: int = 40) -> Version:
    """PCN areas x age band x sex only, one register total per PCN, with the England
    hypertension spec: no ethnicity, no deprivation strata."""
    rng = np.random.default_rng(seed)
    areas = pd.DataFrame({"area": [f"U{i:05d}" for i in range(n)],
                          "sub_icb": [f"S{i % 8:02d}" for i in range(n)],
                          "icb": [f"Q{i % 3:02d}" for i in range(n)]})
    bands = ["16-34", "35-44", "45-54", "55-64", "65-74", "75+"]
    strata = pd.DataFrame([(f"{b}|{s}", b, s) for b in bands for s in ("F", "M")],
                          columns=["stratum", "age_band", "sex"])
    cells = make_cells(areas, strata, rng)
    draws = make_draws(cells, rng, "totals")
    spec = ModelSpec.from_yaml(Path(__file__).parents[1] / "models"
                               / "hypertension_england_pcn.yaml")
    spec = spec.model_copy(update={"sampler": spec.sampler.model_copy(
        update={"chains": CHAINS, "draws": DRAWS, "tune": DRAWS})})
    idata = make_idata(rng, list(strata["stratum"]), mixing=True)
    # Laplace-collapsed area effects: how far their modes were from converged, per draw
    posterior = idata.posterior.to_dataset()
    posterior["laplace_error"] = (("chain", "draw"),
                                      rng.uniform(0, 3e-9, (CHAINS, DRAWS)))
    idata["posterior"] = xr.DataTree(posterior)
    summary = {"levels": {"pcn": n, "sub_icb": min(n, 8), "icb": min(n, 3)},
               "reference_rows": 12,
               "attributes": {"age_band": bands, "sex": ["F", "M"]},
               "censoring": {"exact": n}}
    return save_version(root, spec, cells, draws, idata, summary=summary,
                        covariates=covariates)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Version:
    return synthetic_version(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def synthetic_report(synthetic, tmp_path_factory):
    return build_report(synthetic, tmp_path_factory.mktemp("report"), active=False)


@pytest.fixture(scope="module")
def england(tmp_path_factory) -> Version:
    return england_like_version(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def england_report(england, tmp_path_factory):
    return build_report(england, tmp_path_factory.mktemp("report"))


def section_html(html: str, key: str) -> str:
    match = re.search(rf'<section id="{key}".*?</section>', html, flags=re.S)
    assert match, f"section {key} missing"
    return match[0]


# -- the numbers -------------------------------------------------------------------------

def test_area_draws_are_per_draw_sums_over_each_areas_cells(synthetic):
    area = compute.area_draws(synthetic.cells, synthetic.draws)
    assert list(area.areas) == list(pd.unique(synthetic.cells["area"]))
    for position in (0, 5, 11):
        cells = (synthetic.cells["area"] == area.areas[position]).to_numpy()
        np.testing.assert_allclose(area.undiagnosed[:, position],
                                   synthetic.draws.undiagnosed[:, cells].sum(axis=1),
                                   rtol=1e-6)
        found = (synthetic.cells["population"].to_numpy()[cells]
                 * synthetic.draws.pi[:, cells] * synthetic.draws.theta[:, cells]).sum(axis=1)
        np.testing.assert_allclose(area.found[:, position], found, rtol=1e-5)
    np.testing.assert_allclose(area.expected.sum(axis=1),
                               synthetic.draws.expected.sum(axis=1, dtype=np.float64))


def test_predictive_check_uses_fixed_register_totals_only(synthetic, england):
    area = compute.area_draws(synthetic.cells, synthetic.draws)
    check = compute.predictive_check(area)
    # P12 has cells no register observes: its recorded total varies, so it is left out
    assert check.unchecked == 1 and "P12" not in set(check.table["area"])
    p01 = (synthetic.cells["area"] == "P01").to_numpy()
    observed = check.table.set_index("area").loc["P01", "observed"]
    assert observed == pytest.approx(synthetic.draws.recorded[0, p01].sum(), rel=1e-6)
    t = check.table
    assert ((t["lower"] <= t["median"]) & (t["median"] <= t["upper"])).all()
    assert check.coverage == pytest.approx(t["inside"].mean())
    assert ((t["percentile"] >= 0) & (t["percentile"] <= 1)).all()
    # totals shared over an area's cells: each area's sum is its register total
    england_check = compute.predictive_check(compute.area_draws(england.cells, england.draws))
    assert england_check.unchecked == 0 and len(england_check.table) == 40


def test_predictive_interval_flags_an_observed_total_far_from_its_prediction():
    population = np.array([1000.0, 1000.0])
    found = np.tile([300.0, 300.0], (400, 1))
    recorded = np.tile([302.0, 600.0], (400, 1))
    area = compute.AreaDraws(areas=pd.Index(["A", "B"]), population=population,
                             expected=recorded * 1.5, recorded=recorded,
                             undiagnosed=recorded * 0.5, found=found)
    check = compute.predictive_check(area)
    assert check.table["inside"].tolist() == [True, False]
    assert check.coverage == 0.5
    assert check.table["percentile"].iloc[1] == 1.0


def test_funnel_limits_and_flags():
    expected = np.array([100.0, 10_000.0, 10_000.0, 400.0])
    rate = np.array([0.55, 0.52, 0.58, 0.6])
    draws = 50
    area = compute.AreaDraws(
        areas=pd.Index(list("ABCD")), population=expected * 3,
        expected=np.tile(expected, (draws, 1)), recorded=np.tile(expected * rate, (draws, 1)),
        undiagnosed=np.tile(expected * (1 - rate), (draws, 1)),
        found=np.tile(expected * rate, (draws, 1)))
    funnel = compute.funnel(area, overall=0.55)
    t = funnel.table.set_index("area")
    se = np.sqrt(0.55 * 0.45 / expected)
    np.testing.assert_allclose(t.loc[list("ABCD"), "z"], (rate - 0.55) / se)
    assert t.loc["A", "outside"] == ""
    assert t.loc["B", "outside"] == "99.8%" and t.loc["C", "outside"] == "99.8%"
    assert t.loc["D", "outside"] == "95%"  # z = 2.01: outside 95% limits, inside 99.8%
    assert funnel.count_outside("95%") == 3 and funnel.count_outside("99.8%") == 2
    lower, upper = funnel.limit(np.array([400.0]), "95%")
    half = 1.959964 * np.sqrt(0.55 * 0.45 / 400)
    assert (lower[0], upper[0]) == pytest.approx((0.55 - half, 0.55 + half), rel=1e-6)


# -- the page ----------------------------------------------------------------------------

def test_report_has_every_section_and_no_external_urls(synthetic_report):
    html = synthetic_report.path.read_text()
    for number, (key, title) in enumerate(SECTIONS.items(), start=1):
        assert f"{number}. {title}" in section_html(html, key)
    assert not re.search(r"https?://", html), "the report must not reference the web"
    assert "<script" not in html and "<link" not in html
    assert html.count("<svg") == 6  # predictive, caterpillar, funnel, equity, 2 targets
    assert all(s.unavailable is None for s in synthetic_report.sections.values())


def test_header_shows_identity_and_gate_failures(synthetic, synthetic_report):
    header = unescape(section_html(synthetic_report.path.read_text(), "header"))
    meta = synthetic.meta
    for text in (meta["model"], meta["condition"], meta["version"], meta["created"],
                 meta["dataset"]["name"], meta["dataset"]["hash"], "NUTS"):
        assert text in header
    assert not meta["gate"]["passed"]  # the chains were built not to mix
    assert "Convergence gate FAILED" in header
    for failure in meta["gate"]["failures"]:
        assert failure in header
    assert "not the active version" in header


def test_diagnostics_highlight_failures_against_the_gate(synthetic, synthetic_report):
    html = section_html(synthetic_report.path.read_text(), "diagnostics")
    table = synthetic.diagnostics()
    rhat = table.loc["gamma0", "r_hat"]
    assert rhat > synthetic.meta["gate"]["thresholds"]["rhat"]
    row = re.search(r"<tr><td><code>gamma0</code>.*?</tr>", html, flags=re.S)[0]
    assert f'<td class="fail">{rhat:.3f}</td>' in row
    good = re.search(r"<tr><td><code>sigma_u</code>.*?</tr>", html, flags=re.S)[0]
    assert f'<td class="">{table.loc["sigma_u", "r_hat"]:.3f}</td>' in good
    assert "divergent transitions" in html and "(per chain: 1, 0)" in html
    assert html.count("<tr><td><code>") == len(table)


def test_totals_match_the_joint_draws(synthetic, synthetic_report):
    html = section_html(synthetic_report.path.read_text(), "totals")
    t = totals(synthetic.draws)
    for key in ("expected", "recorded", "undiagnosed"):
        for stat in ("median", "lower", "upper"):
            assert count(t[key][stat]) in html
    assert pct(t["diagnosis_rate"]["median"]) in html
    assert synthetic_report.sections["totals"].content["totals"] == t


def test_predictive_and_area_sections_report_consistent_numbers(synthetic, synthetic_report):
    html = synthetic_report.path.read_text()
    ppc = synthetic_report.sections["predictive"].content
    assert ppc["checked"] == 11 and ppc["unchecked"] == 1
    assert f"{pct(ppc['coverage'])} of 11 areas" in section_html(html, "predictive")
    caterpillar = section_html(html, "caterpillar")
    rates = compute.area_rates(compute.area_draws(synthetic.cells, synthetic.draws))
    assert pct(rates["rate"].iloc[0]) in caterpillar  # lowest area listed
    assert all(f">{a}<" in caterpillar for a in rates["area"].head(5))
    funnel = synthetic_report.sections["funnel"].content
    assert f"overall rate {pct(funnel['overall'])}" in section_html(html, "funnel")
    assert funnel["outside"]["95%"] >= funnel["outside"]["99.8%"]


def test_equity_and_targets_sections_show_the_posterior_queries(synthetic, synthetic_report):
    html = synthetic_report.path.read_text()
    view = PosteriorView.from_version(synthetic)
    content = synthetic_report.sections["equity"].content
    assert list(content["tables"]) == ["ethnicity", "imd_quintile", "age_band", "sex"]
    assert not content["missing"]
    ethnicity = content["tables"]["ethnicity"]
    assert ethnicity["reference"] == "White"
    expected = equity(view, by="ethnicity", reference="White")
    black = expected.set_index("ethnicity").loc["Black"]
    row = next(r for r in ethnicity["rows"] if r["group"] == "Black")
    assert row["ratio_mean"] == pytest.approx(black["ratio_mean"])
    equity_html = section_html(html, "equity")
    assert (f"<td>Black</td><td>{count(black['expected_mean'])}</td>"
            f"<td>{pct(black['diagnosis_rate_mean'])}</td>") in equity_html
    # English IMD: quintile 1 is the most deprived, the least deprived is the reference
    quintile = content["tables"]["imd_quintile"]
    assert quintile["reference"] == "5"
    assert quintile["inequality"]["first"] == "1"
    sii = inequality(view, "imd_quintile", order=["1", "5"]).loc["sii"]
    assert quintile["inequality"]["sii"]["mean"] == pytest.approx(sii["mean"])
    assert "slope index of inequality" in equity_html
    targets = synthetic_report.sections["targets"].content
    assert targets["n"] == 12  # fewer areas than 20: all of them, ranked
    top = top_n(view, 20, by="undiagnosed")
    assert [r["area"] for r in targets["by_count"]] == top["area"].tolist()
    for row in targets["by_count"][:3]:
        assert (f"<td>{row['area']}</td><td>{count(row['undiagnosed_mean'])}</td>"
                in section_html(html, "targets"))
    by_yield = top_n(view, 20, by="yield_per_contact")
    assert [r["area"] for r in targets["by_yield"]] == by_yield["area"].tolist()


def test_assumptions_are_generated_from_the_spec(synthetic_report, england_report):
    html = section_html(synthetic_report.path.read_text(), "assumptions")
    assert "sigma_eps" not in html  # plain words, not parameter names
    assert "standard deviation of 0.1 on the logit scale" in html
    assert "sensitivity choice, not estimated" in html
    assert "Normal(0.1, 0.05)" in html  # the prevalence covariate's prior
    assert "ethnicity not stated" in html
    assert "What a 90% interval means" in html
    england = section_html(england_report.path.read_text(), "assumptions")
    assert "fixed at 0.05 per standard deviation of imd_score" in england
    assert "Laplace approximation" in england and "sub_icb" in england
    assert "HSE 2022" in england
    assert "carry no ethnicity" in england


def test_england_like_report_without_ethnicity_or_deprivation(england, england_report):
    html = england_report.path.read_text()
    content = england_report.sections["equity"].content
    # deprivation from the area covariate's deciles: decile 1, the lowest score, is the
    # least deprived and the reference; the inequality runs from decile 10 to 1
    assert list(content["tables"]) == ["imd_score_decile", "age_band", "sex"]
    assert content["tables"]["imd_score_decile"]["reference"] == "1"
    assert content["tables"]["imd_score_decile"]["inequality"]["first"] == "10"
    assert content["missing"] == ["ethnicity"]
    assert "No breakdown by ethnicity" in section_html(html, "equity")
    ppc = england_report.sections["predictive"].content
    assert ppc["checked"] == 40 and ppc["unchecked"] == 0
    targets = england_report.sections["targets"].content
    assert targets["n"] == 20 and targets["areas"] == 40
    assert not re.search(r"https?://", html)
    error = england.meta["gate"]["checks"]["laplace_error"]
    assert 0 < error < 3e-9
    assert f"one Newton step more</td><td>{error:.1e}<" in section_html(html, "diagnostics")


def test_england_like_report_without_covariates_has_no_deprivation(tmp_path):
    version = england_like_version(tmp_path / "registry", covariates=False)
    content = build_sections(version)["equity"].content
    assert list(content["tables"]) == ["age_band", "sex"]
    assert content["missing"] == ["ethnicity", "deprivation"]


def test_report_without_posterior_says_why(tmp_path):
    version = synthetic_version(tmp_path / "registry", save_posterior=False, mixing=True)
    sections = build_sections(version)
    diag = sections["diagnostics"].content
    assert diag["divergences"] is None and "without its posterior" in diag["stats_note"]
    assert len(diag["rows"]) == len(version.diagnostics())


def test_approximate_fit_is_labelled_prominently(tmp_path):
    version = synthetic_version(tmp_path / "registry", method="advi", mixing=True)
    html = build_report(version, tmp_path / "out").path.read_text()
    header = section_html(html, "header")
    assert "APPROXIMATE FIT" in header and 'role="alert"' in header
    assert "ADVI (approximate)" in header


def test_cli_report_defaults_to_the_active_version(tmp_path):
    root = tmp_path / "registry"
    version = synthetic_version(root, mixing=True)
    runner = CliRunner()
    refused = runner.invoke(app, ["report", "--registry", str(root), "--out",
                                  str(tmp_path / "none")])
    assert refused.exit_code == 1 and version.id in refused.output
    Registry(root).promote(version.id, force=True, reason="report test")
    result = runner.invoke(app, ["report", "--registry", str(root), "--out",
                                 str(tmp_path / "active")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "active" / "index.html").read_text()
    assert version.id in html and "(active)" in html
    named = runner.invoke(app, ["report", version.id, "--registry", str(root), "--out",
                                str(tmp_path / "named")])
    assert named.exit_code == 0, named.output
    missing = runner.invoke(app, ["report", "nope", "--registry", str(root), "--out",
                                  str(tmp_path / "x")])
    assert missing.exit_code == 1 and "no version 'nope'" in missing.output
    other = runner.invoke(app, ["report", version.id, "--model", "other", "--registry",
                                str(root), "--out", str(tmp_path / "y")])
    assert other.exit_code == 1 and "belongs to model 'report_synthetic'" in other.output


# -- in a browser ------------------------------------------------------------------------

@pytest.mark.browser
def test_report_renders_in_headless_chromium(synthetic_report, england_report):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package")
    from playwright import sync_api

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            for name, report in (("synthetic", synthetic_report), ("england", england_report)):
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors: list[str] = []
                page.on("console", lambda m, e=errors: e.append(m.text)
                        if m.type == "error" else None)
                page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
                page.goto(report.path.resolve().as_uri())
                for key in SECTIONS:
                    section = page.locator(f"section#{key}")
                    assert section.count() == 1, key
                    assert section.is_visible(), key
                    assert len(section.inner_text().strip()) > 40, key
                figures = page.locator("figure")
                assert figures.count() >= 6
                for i in range(figures.count()):
                    box = figures.nth(i).locator("svg, img").first.bounding_box()
                    assert box and box["width"] > 100 and box["height"] > 50, i
                broken = page.evaluate("""() => [...document.images]
                    .filter(img => !img.complete || img.naturalWidth === 0).length""")
                assert broken == 0
                raster = page.evaluate("""() => [...document.querySelectorAll('svg image')]
                    .filter(i => i.getBBox().width === 0).length""")
                assert raster == 0
                page.screenshot(path=str(ARTIFACTS / f"report_{name}.png"), full_page=True)
                assert not errors, errors
                page.close()
        finally:
            browser.close()
