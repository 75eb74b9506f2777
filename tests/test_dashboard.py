"""The dashboard at ``/``: the page and its routes in-process, and (marked `browser`) the
page in headless Chromium against a real uvicorn process."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from api_support import (
    MODEL,
    make_keys,
    make_version,
    set_gate,
    start_env,
    start_server,
    stop_server,
    wait_for,
)
from conftest import shared_data_dir
from test_api_server import free_port
from test_report import (
    ARTIFACTS,
    CHAINS,
    CHROMIUM,
    DRAWS,
    make_cells,
    make_draws,
    make_idata,
    save_version,
)

from api.dashboard.boundaries import load_all, read_boundaries
from api.settings import BoundarySource
from gapmodel.registry import Registry, Version
from gapmodel.spec import ModelSpec

ROOT = Path(__file__).parents[1]
PCNS = ("N01", "N02", "N03")
# one practice, one cell: populations of 3 to 39, so a viewer sees withheld counts
ONE_CELL = {"age_band": "40-59", "sex": "F", "ethnicity": "Black", "imd_quintile": "1"}


def write_boundaries(path: Path) -> Path:
    """Squares side by side near (0 E, 52 N), one per PCN of the test versions, and one
    area the model does not have; one of them a MultiPolygon."""
    features = []
    for i, code in enumerate((*PCNS, "N99")):
        x = -1 + 0.5 * i
        ring = [[x, 52.0], [x + 0.5, 52.0], [x + 0.5, 52.4], [x, 52.4], [x, 52.0]]
        geometry = ({"type": "MultiPolygon", "coordinates": [[ring]]} if i == 1
                    else {"type": "Polygon", "coordinates": [ring]})
        features.append({"type": "Feature", "geometry": geometry,
                         "properties": {"CODE": code, "NAME": f"Network {code}"}})
    features.append({"type": "Feature", "geometry": None, "properties": {"CODE": "X"}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def boundary_setting(path: Path) -> dict[str, Any]:
    return {"pcn": {"path": str(path), "code": "CODE", "name": "NAME"}}


# -- in-process ---------------------------------------------------------------------------

SUBICB = "subicb22_england_boundaries_simplified.geojson"


@pytest.mark.realdata
def test_england_sub_icb_boundaries_carry_the_models_codes():
    data = shared_data_dir()
    if data is None or not (data / SUBICB).is_file():
        pytest.skip("England data not found: set GAPMODEL_DATA_DIR or provide "
                    "../shared/data beside the repository")
    found = read_boundaries("sub_icb", BoundarySource(path=data / SUBICB, code="LOC22CD",
                                                      name="LOC22NM"))
    codes = {f["code"] for f in found["features"]}
    assert len(codes) == 106 and all(c.startswith("E38") for c in codes)
    lon0, lat0, lon1, lat1 = found["bbox"]
    assert -7 < lon0 < lon1 < 2 and 49 < lat0 < lat1 < 56
    # the codes of the England builders' sub_icb level (the QOF mapping's ONS codes)
    mapping = pd.read_csv(data / "qof_2022_23_mapping_practice_pcn_subicb_icb_region.csv",
                          usecols=["SUB_ICB_ONS_CODE"])
    assert set(mapping["SUB_ICB_ONS_CODE"]) == codes


def test_boundaries_keep_codes_names_and_polygons(tmp_path):
    path = write_boundaries(tmp_path / "b.geojson")
    found = read_boundaries("pcn", BoundarySource(path=path, code="CODE", name="NAME"))
    assert [f["code"] for f in found["features"]] == [*PCNS, "N99"]
    assert found["features"][0]["name"] == "Network N01"
    assert found["bbox"] == [-1.0, 52.0, 1.0, 52.4]
    assert all(len(f["polygons"]) == 1 for f in found["features"])
    # a missing file or property is left out with a log line, never an exception
    loaded = load_all({"pcn": BoundarySource(path=path, code="CODE"),
                       "icb": BoundarySource(path=tmp_path / "none.geojson"),
                       "sub_icb": BoundarySource(path=path, code="NOPE")})
    assert list(loaded) == ["pcn"]
    assert loaded["pcn"]["features"][0]["name"] == "N01"


def test_page_statics_key_and_boundaries_routes(tmp_path):
    version = make_version(tmp_path / "registry", areas=12)
    Registry(tmp_path / "registry").promote(version.id)
    path = write_boundaries(tmp_path / "b.geojson")
    with start_env(tmp_path, {"active": version}, preload=False,
                   boundaries=boundary_setting(path)) as env:
        page = env.client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'for="api-key"' in page.text and "/dashboard/static/dashboard.js" in page.text
        assert "http://" not in page.text.replace("http://www.w3.org", "")
        assert "https://" not in page.text
        for name in ("dashboard.js", "dashboard.css"):
            assert env.client.get(f"/dashboard/static/{name}").status_code == 200
        assert env.get("/dashboard/key", role=None).status_code == 401
        viewer = env.get("/dashboard/key", role="viewer").json()
        assert viewer == {"name": "test-viewer", "role": "viewer", "plans": False,
                          "exact": False}
        outreach = env.get("/dashboard/key", role="outreach").json()
        assert outreach["plans"] and not outreach["exact"]
        assert env.get("/dashboard/key", role="analyst").json()["exact"]
        assert env.get("/dashboard/boundaries", role="viewer").json() == {
            "levels": {"pcn": 4}}
        geo = env.get("/dashboard/boundaries/pcn", role="viewer").json()
        assert geo["level"] == "pcn" and len(geo["features"]) == 4
        missing = env.get("/dashboard/boundaries/icb", role="viewer")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert "/dashboard/key" not in env.client.get("/openapi.json").json()["paths"]
        # estimates as GeoJSON: one feature per PCN, its shape and its estimates
        url = f"/v1/models/{version.meta['model']}/estimates?level=pcn&format=geojson"
        collection = env.get(url, role="analyst")
        assert collection.headers["content-type"].startswith("application/geo+json")
        features = collection.json()["features"]
        table = env.get(url.replace("geojson", "json"), role="analyst").json()["rows"]
        assert [f["properties"]["group"]["pcn"] for f in features] == \
            [r["group"]["pcn"] for r in table]
        assert all(f["geometry"]["type"] == "MultiPolygon" for f in features)
        assert features[0]["properties"]["undiagnosed"] == table[0]["undiagnosed"]
        assert features[0]["properties"]["name"] == f"Network {table[0]['group']['pcn']}"
        for bad in ("level=sub_icb", "level=pcn&level=sex", ""):
            refused = env.get(f"/v1/models/{version.meta['model']}/estimates?{bad}"
                              "&format=geojson", role="analyst")
            assert refused.status_code == 422, bad
            assert refused.json()["error"]["code"] == "invalid_query"


# -- in a browser -------------------------------------------------------------------------

def england_subicb_version(root: Path, boundaries: Path) -> Version:
    """A hand-made version of the England sub-ICB hypertension spec whose areas are the
    sub-ICB codes of the boundary file (draws made up; for drawing the map only)."""
    rng = np.random.default_rng(3)
    features = json.loads(boundaries.read_text())["features"]
    codes = sorted(f["properties"]["LOC22CD"] for f in features)
    areas = pd.DataFrame({"area": codes, "icb": [f"Q{i % 42:02d}" for i in range(len(codes))]})
    bands = ["16-34", "35-44", "45-54", "55-64", "65-74", "75+"]
    strata = pd.DataFrame([(f"{b}|{x}", b, x) for b in bands for x in ("F", "M")],
                          columns=["stratum", "age_band", "sex"])
    cells = make_cells(areas, strata, rng)
    spec = ModelSpec.from_yaml(ROOT / "models" / "hypertension_england_subicb.yaml")
    spec = spec.model_copy(update={"sampler": spec.sampler.model_copy(
        update={"chains": CHAINS, "draws": DRAWS, "tune": DRAWS})})
    summary = {"levels": {"sub_icb": len(codes), "icb": 42}, "reference_rows": 12,
               "attributes": {"age_band": bands, "sex": ["F", "M"]},
               "censoring": {"exact": len(codes)}}
    version = save_version(root, spec, cells, make_draws(cells, rng, "totals"),
                           make_idata(rng, list(strata["stratum"]), mixing=True),
                           summary=summary)
    return set_gate(version, True)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A real uvicorn process over a small version (some counts small enough to be
    withheld from viewers), PCN boundaries and one key per role."""
    tmp = tmp_path_factory.mktemp("dashboard")
    version = make_version(tmp / "registry", areas=12, small=True, seed=4)
    Registry(tmp / "registry").promote(version.id)
    url = f"sqlite:///{tmp / 'api.db'}"
    keys = make_keys(url)
    port = free_port()
    boundaries = boundary_setting(write_boundaries(tmp / "pcn.geojson"))
    data = shared_data_dir()
    england = None
    if data is not None and (data / SUBICB).is_file():
        england = england_subicb_version(tmp / "registry", data / SUBICB).id
        Registry(tmp / "registry").promote(england)
        boundaries["sub_icb"] = {"path": str(data / SUBICB), "code": "LOC22CD",
                                 "name": "LOC22NM"}
    env = {**os.environ, "GAPMODEL_REGISTRY": str(tmp / "registry"), "DATABASE_URL": url,
           "GAPMODEL_DATASETS_DIR": str(tmp / "datasets"),
           "GAPMODEL_BOUNDARIES": json.dumps(boundaries)}
    server = start_server(port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/ready", server)
        yield {"base": base, "keys": keys, "version": version.id, "england": england}
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package")
    from playwright import sync_api

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def open_signed_in(browser, served: dict[str, Any], role: str,
                   routes: dict[str, Any] | None = None) -> tuple[Any, list[str]]:
    """A page signed in with the role's key, collecting console errors; `routes` (URL
    pattern: handler) are in place before the page loads."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    for pattern, handler in (routes or {}).items():
        page.route(pattern, handler)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(served["base"] + "/")
    page.get_by_label("API key").fill(served["keys"][role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function("v => document.getElementById('prov-line').textContent"
                           ".includes(v)", arg=served["version"])
    return page, errors


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"dashboard_{name}.png"), full_page=True)


def table_text(page: Any) -> str:
    return page.locator("#estimates tbody").inner_text()


@pytest.mark.browser
def test_dashboard_as_an_analyst(browser, served):
    page, errors = open_signed_in(browser, served, "analyst")
    assert "Signed in: test-analyst (analyst)" in page.locator("#who").inner_text()
    assert "90% sure the true number lies in this range" in \
        page.locator("#interval-line").inner_text()
    assert "hash 000000000000" in page.locator("#prov-line").inner_text()
    # the map: PCN boundaries from the configured GeoJSON, every shape focusable
    page.wait_for_selector("#map svg path")
    paths = page.locator("#map svg path.area")
    assert paths.count() == 4
    label = paths.first.get_attribute("aria-label")
    assert label.startswith("Network N01 (N01): diagnosis rate") and "90% interval" in label
    assert paths.nth(3).get_attribute("aria-label").endswith("no estimate in this model")
    paths.first.focus()
    assert "90% interval" in page.locator("#map-tip").inner_text()
    shot(page, "map")
    # practices have no boundaries: tiles in PCN order
    page.select_option("#map-level", "practice")
    page.wait_for_selector("#map svg rect.area")
    tiles = page.locator("#map svg rect.area")
    assert tiles.count() == 12
    assert tiles.first.get_attribute("aria-label").startswith("P001 (PCN N01)")
    page.select_option("#map-measure", "undiagnosed")
    page.wait_for_function("() => document.querySelector('#map svg rect.area')"
                           ".getAttribute('aria-label').includes('undiagnosed people')")
    shot(page, "map_tiles")

    # tabs work from the keyboard
    page.locator("#tab-map").focus()
    page.keyboard.press("ArrowRight")
    assert page.locator("#tab-table").get_attribute("aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-table"
    page.wait_for_selector("#estimates tbody tr")
    page.select_option("#table-level", "pcn")
    page.wait_for_function("() => document.querySelectorAll('#estimates tbody tr')"
                           ".length === 3")
    before = table_text(page)
    page.select_option("#attr-ethnicity", "Black")
    page.wait_for_function("() => document.getElementById('table-caption').textContent"
                           ".includes(\"ethnicity == 'Black'\")")
    after = table_text(page)
    assert after != before and len(page.locator("#estimates tbody tr").all()) == 3
    # sorting by a column header
    page.get_by_role("button", name="Undiagnosed: sort ascending").click()
    page.wait_for_selector("#estimates th[aria-sort=ascending]")
    shot(page, "table")
    with page.expect_download() as download:
        page.click("#table-csv")
    csv = Path(download.value.path()).read_text()
    header = csv.splitlines()[0].split(",")
    assert header[:3] == ["pcn", "cells", "population"]
    assert {"undiagnosed_mean", "undiagnosed_lower", "diagnosis_rate_mean",
            "suppressed"} <= set(header)
    assert len(csv.splitlines()) == 4
    assert download.value.suggested_filename.endswith("-estimates.csv")

    page.click("#tab-funnel")
    page.wait_for_selector("#funnel svg circle.point")
    assert page.locator("#funnel svg circle.point").count() == 12
    assert page.locator("#funnel svg path.limit95").count() == 2
    assert "Overall diagnosis rate" in page.locator("#funnel-notes").inner_text()
    shot(page, "funnel")

    page.click("#tab-equity")
    page.wait_for_selector("#equity svg circle.est")
    page.select_option("#equity-by", "ethnicity")
    page.wait_for_function("() => document.querySelectorAll('#equity-table tbody tr')"
                           ".length === 3 && document.getElementById('equity-table')"
                           ".textContent.includes('Asian')")
    assert "(reference)" in page.locator("#equity-table").inner_text()
    assert "SII" in page.locator("#equity-index").inner_text()
    shot(page, "equity")

    page.click("#tab-plan")
    page.fill("#plan-capacity", "400")
    page.click("#plan-run")
    page.wait_for_selector("#plan-table tbody tr")
    assert page.locator("#plan-table tbody tr").count() >= 1
    assert "people to contact" in page.locator("#plan-summary").inner_text()
    with page.expect_download() as download:
        page.click("#plan-csv")
    plan_csv = Path(download.value.path()).read_text().splitlines()
    assert plan_csv[0].startswith("rank,area,population,unregistered,contacts,found_mean")
    assert len(plan_csv) == page.locator("#plan-table tbody tr").count() + 1
    shot(page, "planner")
    assert not errors, errors
    page.close()


@pytest.mark.browser
def test_a_viewer_sees_small_counts_suppressed(browser, served):
    page, errors = open_signed_in(browser, served, "viewer")
    page.wait_for_selector("#disclosure-line", state="visible")
    assert "counts of 1 to 7 people" in page.locator("#disclosure-line").inner_text()
    page.click("#tab-table")
    page.wait_for_selector("#estimates tbody tr")
    page.select_option("#table-level", "practice")
    for attr, value in ONE_CELL.items():
        page.select_option(f"#attr-{attr}", value)
    page.wait_for_function("() => document.getElementById('table-caption').textContent"
                           ".includes(\"imd_quintile == '1'\")")
    page.wait_for_function("() => document.querySelectorAll('#estimates tbody tr')"
                           ".length === 12")
    where = " and ".join(f"{k} == '{v}'" for k, v in ONE_CELL.items())
    exact = httpx.get(f"{served['base']}/v1/models/{MODEL}/estimates",
                      params={"level": "practice", "where": where, "page_size": 100,
                              "sort": "-undiagnosed_mean"},
                      headers={"X-API-Key": served["keys"]["analyst"]}).json()["rows"]
    small = {r["group"]["area"] for r in exact if 1 <= round(r["undiagnosed"]["mean"]) <= 7}
    assert small, "the version should have practices with 1 to 7 undiagnosed"
    rows = page.locator("#estimates tbody tr")
    seen = set()
    for i in range(rows.count()):
        row = rows.nth(i)
        area = row.locator("td").first.inner_text()
        shown = row.locator("td[data-measure=undiagnosed]").inner_text()
        if area in small:
            seen.add(area)
            assert shown == "suppressed (<8)", (area, shown)
        for measure in ("expected", "recorded", "undiagnosed"):
            text = row.locator(f"td[data-measure={measure}]").inner_text()
            numbers = [int(t) for t in text.replace("≈", " ").replace(",", "").split()
                       if t.isdigit()]
            assert not [n for n in numbers if 1 <= n <= 7], (area, measure, text)
    assert seen == small
    shot(page, "viewer_table")
    page.click("#tab-plan")
    assert page.locator("#plan-denied").is_visible()
    assert not page.locator("#plan-form").is_visible()
    assert "outreach role" in page.locator("#plan-denied").inner_text()
    page.click("#tab-map")
    page.wait_for_selector("#map svg path.area")
    assert not errors, errors
    page.close()


@pytest.mark.browser
def test_a_late_response_does_not_draw_over_a_newer_map(browser, served):
    """The map's first request is held back until the user has asked for another measure
    and its map is drawn; the first response, arriving last, is dropped."""
    held: list[Any] = []

    def hold_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page, errors = open_signed_in(browser, served, "analyst",
                                  {"**/v1/models/*/estimates?*": hold_first})
    page.wait_for_function("() => document.getElementById('map-level').value === 'pcn'")
    assert len(held) == 1 and "level=pcn" in held[0].request.url
    page.select_option("#map-measure", "undiagnosed")
    # a count, not a percentage, after the measure's name: the newer map
    newer = ("() => { const p = document.querySelectorAll('#map svg path.area');"
             " return p.length === 4 && [...p].every(n => n.dataset.code === 'N99' ||"
             " /undiagnosed people [0-9,]+ [(]90% interval/.test(n.getAttribute('aria-label')));"
             " }")
    page.wait_for_function(newer)
    with page.expect_request_finished(lambda r: r.url == held[0].request.url):
        held[0].continue_()
    # let the page handle the late response (parse it, then a few turns of its event loop)
    page.evaluate("() => new Promise(done => setTimeout(done, 300))")
    assert page.evaluate(newer), page.locator("#map svg path.area").first.get_attribute(
        "aria-label")
    assert page.locator("#map-notes").inner_text() == ""
    assert not errors, errors
    page.close()


@pytest.mark.browser
@pytest.mark.realdata
def test_england_sub_icb_map_from_the_shared_boundaries(browser, served):
    if served["england"] is None:
        pytest.skip("England data not found: set GAPMODEL_DATA_DIR or provide "
                    "../shared/data beside the repository")
    page, errors = open_signed_in(browser, served, "analyst")
    page.select_option("#model", "hypertension_england_subicb")
    page.wait_for_function("v => document.getElementById('prov-line').textContent"
                           ".includes(v)", arg=served["england"])
    assert page.locator("#map-level").input_value() == "sub_icb"
    page.wait_for_function("() => document.querySelectorAll('#map svg path.area')"
                           ".length === 106")
    labels = page.locator("#map svg path.area").evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('aria-label'))")
    odd = [label for label in labels
           if "diagnosis rate" not in label or "90% interval" not in label]
    assert not odd, odd[:5]
    assert any(label.startswith("NHS South Yorkshire ICB - 02P (E38000006)")
               for label in labels)
    box = page.locator("#map svg").bounding_box()
    assert box["height"] > box["width"]  # England is taller than wide
    shot(page, "map_england_sub_icb")
    assert not errors, errors
    page.close()
