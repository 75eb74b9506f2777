"""The service's read routes against a registry of hand-made versions: answers match
gapmodel.posterior, every route needs a key of the right role, errors have one shape."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from api_support import MODEL, assert_error, registry_with_versions, start_env

from gapmodel.posterior import PosteriorView, equity, estimates, plan

ROLES = ("viewer", "outreach", "analyst", "admin")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api_reads")
    with start_env(tmp, registry_with_versions(tmp)) as env:
        yield env


@pytest.fixture(scope="module")
def view(env) -> PosteriorView:
    return PosteriorView.from_version(env.versions["active"])


def test_health_ready_and_openapi(env):
    assert env.get("/health", role=None).json() == {"status": "ok"}
    ready = env.get("/ready", role=None)
    assert ready.status_code == 200 and ready.json()["models"] == [MODEL]
    doc = env.get("/openapi.json", role=None).json()
    schemes = doc["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
    for path in ("/v1/models", "/v1/models/{model}/estimates", "/v1/models/{model}/targets",
                 "/v1/models/{model}/equity", "/v1/models/{model}/aggregate",
                 "/v1/versions/{version_id}", "/v1/fits", "/v1/datasets"):
        assert path in doc["paths"]
    assert "EstimatesResponse" in doc["components"]["schemas"]


def test_ready_is_503_without_an_active_version(tmp_path):
    with start_env(tmp_path, {}) as empty:
        response = empty.get("/ready", role=None)
        assert response.status_code == 503
        assert response.json() == {"status": "not ready", "models": []}
        assert_error(empty.get(f"/v1/models/{MODEL}/estimates"), 404, "not_found")


def test_models_versions_and_version_detail(env):
    active, failing = env.versions["active"], env.versions["failing"]
    models = env.get("/v1/models", role="viewer").json()
    assert [m["name"] for m in models] == [MODEL]
    assert models[0]["active_version"] == active.id and models[0]["versions"] == 2
    assert models[0]["latest_version"] == failing.id
    versions = env.get(f"/v1/models/{MODEL}/versions", role="viewer").json()
    assert [v["version"] for v in versions] == [active.id, failing.id]
    assert [v["active"] for v in versions] == [True, False]
    assert [v["gate_passed"] for v in versions] == [True, False]
    detail = env.get(f"/v1/versions/{failing.id}", role="viewer").json()
    assert detail["spec"]["name"] == MODEL
    assert detail["dataset_hash"] == failing.meta["dataset"]["hash"]
    assert detail["gate"]["passed"] is False and detail["gate"]["failures"]
    assert {"pymc", "numpy", "gapmodel"} <= set(detail["packages"])
    parameters = {d["parameter"] for d in detail["diagnostics"]}
    assert "total_undiagnosed" in parameters
    assert {"r_hat", "ess_bulk"} <= set(detail["diagnostics"][0])
    assert set(detail["files"]) == set(failing.meta["files"])
    assert_error(env.get("/v1/versions/nope", role="viewer"), 404)
    assert_error(env.get(f"/v1/models/{MODEL}x/versions", role="viewer"), 404)


def summary_of(row: pd.Series, measure: str) -> dict[str, float]:
    return {s: row[f"{measure}_{s}"] for s in ("mean", "sd", "lower", "upper")}


def test_estimates_match_the_library_for_an_analyst(env, view):
    response = env.get(f"/v1/models/{MODEL}/estimates", params={"level": "pcn",
                                                                "prob": 0.8})
    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == env.versions["active"].id
    body = response.json()
    expected = estimates(view, by="pcn", prob=0.8)
    assert body["total_rows"] == len(expected) and body["by"] == ["pcn"]
    assert body["disclosure"]["applied"] is False
    assert body["dataset_hash"] == env.versions["active"].meta["dataset"]["hash"]
    for row, (_, want) in zip(body["rows"], expected.iterrows(), strict=True):
        assert row["group"] == {"pcn": want["pcn"]}
        for measure in ("expected", "undiagnosed", "diagnosis_rate", "yield_per_contact"):
            np.testing.assert_allclose(list(row[measure].values()),
                                       list(summary_of(want, measure).values()), rtol=1e-9)
        assert not row["suppressed"] and not row["rounded"]


def test_estimates_filters_paging_sorting_and_files(env, view):
    url = f"/v1/models/{MODEL}/estimates"
    where = "ethnicity == 'Black'"
    body = env.get(url, params={"level": "area", "where": where, "parent": "pcn:N01",
                                "sort": "-undiagnosed_mean", "page_size": 2,
                                "page": 2}).json()
    under = sorted(view.cells.loc[view.cells["pcn"] == "N01", "area"].unique())
    want = estimates(view, by="area", where=where, areas=under)
    want = want.sort_values("undiagnosed_mean", ascending=False).reset_index(drop=True)
    assert body["total_rows"] == len(under) and body["page_size"] == 2
    assert [r["group"]["area"] for r in body["rows"]] == list(want["area"][2:4])
    both = env.get(url, params=[("level", "pcn,sex"), ("areas", "P001,P005"),
                                ("exceed", "10")]).json()
    want = estimates(view, by=["pcn", "sex"], areas=["P001", "P005"], exceed=[10])
    assert both["total_rows"] == len(want)
    assert list(both["rows"][0]["exceed"]) == ["p_undiagnosed_gt_10"]
    text = env.get(url, params={"level": "pcn", "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    frame = pd.read_csv(io.StringIO(text.text))
    assert len(frame) == len(estimates(view, by="pcn"))
    assert {"pcn", "undiagnosed_mean", "suppressed"} <= set(frame.columns)
    parquet = env.get(url, params={"level": "sex", "format": "parquet"})
    assert pd.read_parquet(io.BytesIO(parquet.content))["sex"].tolist() == ["F", "M"]
    named = env.get(url, params={"version": env.versions["failing"].id}).json()
    assert named["version"] == env.versions["failing"].id


def test_aggregate_sums_the_joint_draws(env, view):
    body = env.post(f"/v1/models/{MODEL}/aggregate",
                    json={"areas": ["P002", "P007"], "where": {"sex": "F"},
                          "prob": 0.5}).json()
    want = estimates(view, where={"sex": "F"}, areas=["P002", "P007"], prob=0.5)
    assert body["total_rows"] == 1 and body["rows"][0]["group"] == {}
    np.testing.assert_allclose(list(body["rows"][0]["undiagnosed"].values()),
                               list(summary_of(want.iloc[0], "undiagnosed").values()))
    by = env.post(f"/v1/models/{MODEL}/aggregate", json={"by": ["imd_quintile"]}).json()
    assert [r["group"]["imd_quintile"] for r in by["rows"]] == ["1", "5"]


def test_targets_and_equity_match_the_library(env, view):
    body = {"capacity": 2000, "equity": {"attribute": "imd_quintile",
                                         "weights": {"1": 2.0}}}
    got = env.post(f"/v1/models/{MODEL}/targets", json=body, role="outreach")
    assert got.status_code == 200, got.text
    # outreach is below analyst: its counts are rounded, so compare an analyst's plan
    got = env.post(f"/v1/models/{MODEL}/targets", json=body).json()
    want = plan(view, 2000, equity={"attribute": "imd_quintile", "weights": {"1": 2.0}})
    assert got["total"]["contacts"] == want.total["contacts"]
    np.testing.assert_allclose(got["total"]["found"]["mean"], want.total["found"]["mean"])
    assert [u["group"]["area"] for u in got["units"]] == list(want.units["area"])
    assert got["units"][0]["weight"] is not None and "yield" in got["units"][0]
    table = env.get(f"/v1/models/{MODEL}/equity",
                    params={"by": "imd_quintile", "reference": "5"}).json()
    want = equity(view, by="imd_quintile", reference="5")
    assert table["reference"] == "5"
    np.testing.assert_allclose([r["ratio"]["mean"] for r in table["rows"]],
                               want["ratio_mean"])
    assert [r["measure"] for r in table["inequality"]["rows"]] == ["sii", "rii"]
    assert table["inequality"]["order"] == ["1", "5"]


@pytest.mark.parametrize(("params", "fragment"), [
    ({"level": "nope"}, "unknown column"),
    ({"where": "ethnicity == 'Martian'"}, "unknown value"),
    ({"where": "__import__('os')"}, "filter"),
    ({"areas": "ZZZ"}, "unknown area"),
    ({"parent": "pcn:N99"}, "no pcn"),
    ({"sort": "nope"}, "cannot sort"),
])
def test_query_mistakes_are_422_with_a_message(env, params, fragment):
    error = assert_error(env.get(f"/v1/models/{MODEL}/estimates", params=params), 422)
    assert fragment in error["message"]


def test_request_mistakes_have_the_error_shape(env):
    url = f"/v1/models/{MODEL}/estimates"
    assert_error(env.get(url, params={"prob": 2}), 422, "validation_error")
    assert_error(env.get(url, params={"format": "xml"}), 422, "validation_error")
    assert_error(env.get(url, params={"version": "../../etc"}), 404)
    assert_error(env.get("/v1/models/../estimates"), 404)
    assert_error(env.post(f"/v1/models/{MODEL}/targets", json={"capacity": 0}), 422)
    assert_error(env.post(f"/v1/models/{MODEL}/targets", content=b"{not json",
                          headers={"content-type": "application/json"}), 422)
    assert_error(env.post(f"/v1/models/{MODEL}/aggregate", json={"bogus": 1}), 422)
    assert_error(env.get(f"/v1/models/{MODEL}/equity", params={"by": "sex",
                                                               "reference": "X"}), 422)
    assert_error(env.delete("/v1/models"), 405)
    assert_error(env.get("/v1/nothing-here"), 404)


# -- every route x role -------------------------------------------------------------------

def routes(env) -> list[tuple[str, str, dict, str]]:
    """(method, path, request kwargs, least role) of every keyed route."""
    failing = env.versions["failing"].id
    return [
        ("GET", "/metrics", {}, "viewer"),
        ("GET", "/v1/models", {}, "viewer"),
        ("GET", f"/v1/models/{MODEL}/versions", {}, "viewer"),
        ("GET", f"/v1/versions/{failing}", {}, "viewer"),
        ("GET", f"/v1/models/{MODEL}/estimates", {}, "viewer"),
        ("POST", f"/v1/models/{MODEL}/aggregate", {"json": {}}, "viewer"),
        ("GET", f"/v1/models/{MODEL}/equity", {"params": {"by": "sex"}}, "viewer"),
        ("POST", f"/v1/models/{MODEL}/targets", {"json": {"capacity": 10}}, "outreach"),
        ("POST", f"/v1/models/{MODEL}/promote", {"json": {"version": "x"}}, "analyst"),
        ("POST", f"/v1/models/{MODEL}/rollback", {}, "analyst"),
        ("POST", "/v1/datasets", {"files": {"files": ("a.csv", b"x\n1\n")}}, "analyst"),
        ("GET", f"/v1/datasets/{'0' * 64}", {}, "analyst"),
        ("POST", "/v1/fits", {"json": {"spec": "nope"}}, "analyst"),
        ("GET", "/v1/fits", {}, "analyst"),
        ("GET", "/v1/fits/nope", {}, "analyst"),
        ("DELETE", "/v1/fits/nope", {}, "analyst"),
        ("GET", "/v1/keys", {}, "admin"),
        ("POST", "/v1/keys", {"json": {"role": "viewer"}}, "admin"),
        ("DELETE", "/v1/keys/999", {}, "admin"),
        ("GET", "/v1/audit", {}, "admin"),
    ]


def test_every_route_needs_a_key_of_the_right_role(env):
    doc = env.get("/openapi.json", role=None).json()
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    covered = set()
    for method, path, kwargs, least in routes(env):
        template = next(t for m, t in listed if m == method and _matches(t, path))
        covered.add((method, template))
        assert_error(env.client.request(method, path, **kwargs), 401, "unauthorized")
        assert_error(env.client.request(method, path, headers={"X-API-Key": "gm_wrong"},
                                        **kwargs), 401)
        for role in ROLES:
            response = env.client.request(method, path, headers=env.headers(role),
                                          **kwargs)
            if ROLES.index(role) < ROLES.index(least):
                assert_error(response, 403, "forbidden")
            else:
                assert response.status_code not in (401, 403), (method, path, role)
                assert response.status_code < 500, response.text
    open_routes = {("GET", "/health"), ("GET", "/ready")}
    assert listed - covered == open_routes


def _matches(template: str, path: str) -> bool:
    parts, given = template.split("/"), path.split("/")
    return len(parts) == len(given) and all(
        t.startswith("{") or t == g for t, g in zip(parts, given, strict=True))


def test_bearer_tokens_work_and_revoked_keys_do_not(env):
    token = {"Authorization": f"Bearer {env.keys['viewer']}"}
    assert env.client.get("/v1/models", headers=token).status_code == 200
    made = env.post("/v1/keys", role="admin", json={"role": "viewer", "name": "short"})
    assert made.status_code == 201
    key = made.json()["key"]
    assert env.client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    listed = env.get("/v1/keys", role="admin").json()
    assert all("key" not in k for k in listed)
    assert env.delete(f"/v1/keys/{made.json()['id']}", role="admin").status_code == 200
    assert_error(env.client.get("/v1/models", headers={"X-API-Key": key}), 401)


def test_metrics_count_requests_by_route(env):
    env.get(f"/v1/models/{MODEL}/estimates", role="viewer")
    text = env.get("/metrics", role="viewer").text
    assert 'route="/v1/models/{model}/estimates"' in text
    assert "gapmodel_versions_loaded" in text


def test_versions_are_cached_in_a_small_lru(tmp_path):
    versions = registry_with_versions(tmp_path)
    with start_env(tmp_path, versions, cache_versions=1) as small:
        store = small.client.app.state.services.store
        assert store.loaded() == [versions["active"].id]
        small.get(f"/v1/models/{MODEL}/estimates",
                  params={"version": versions["failing"].id})
        assert store.loaded() == [versions["failing"].id]
        small.get(f"/v1/models/{MODEL}/estimates")
        assert store.loaded() == [versions["active"].id]


def test_the_library_never_imports_the_service():
    from pathlib import Path

    root = Path(__file__).parents[1] / "gapmodel"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import api" not in text and "from api" not in text, path
