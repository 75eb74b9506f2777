"""Writes: promotion and rollback through the registry's rules, dataset uploads checked
by gapmodel's validator, keys from the command line, and the audit log."""

from __future__ import annotations

import pytest
from api_support import MODEL, assert_error, registry_with_versions, start_env
from conftest import TINY
from typer.testing import CliRunner

from api.db import Database
from gapmodel.cli import app as cli
from gapmodel.registry import Registry


@pytest.fixture
def env(tmp_path):
    with start_env(tmp_path, registry_with_versions(tmp_path)) as env:
        yield env


def test_promotion_follows_the_gate_and_rollback_restores(env):
    active, failing = env.versions["active"], env.versions["failing"]
    url = f"/v1/models/{MODEL}/promote"
    refused = assert_error(env.post(url, json={"version": failing.id}), 409, "not_promotable")
    assert "failed the convergence gate" in refused["message"]
    assert_error(env.post(url, json={"version": failing.id, "force": True}), 422,
                 "reason_required")
    assert_error(env.post(url, json={"version": "20990101T000000-deadbeef"}), 404)
    assert Registry(env.settings.registry).active_id(MODEL) == active.id
    done = env.post(url, json={"version": failing.id, "force": True,
                               "reason": "reviewed by hand"})
    assert done.json() == {"model": MODEL, "active": failing.id, "previous": active.id}
    queried = env.get(f"/v1/models/{MODEL}/estimates").json()
    assert queried["version"] == failing.id
    back = env.post(f"/v1/models/{MODEL}/rollback")
    assert back.status_code == 200 and back.json()["active"] == active.id
    assert env.get(f"/v1/models/{MODEL}/estimates").json()["version"] == active.id
    assert_error(env.post(f"/v1/models/{MODEL}/rollback"), 409, "no_rollback")
    history = Registry(env.settings.registry).history(MODEL)
    assert [e["action"] for e in history][-2:] == ["promote", "rollback"]
    assert history[-2]["reason"] == "reviewed by hand"


def test_writes_are_audited_with_who_what_and_outcome(env):
    failing = env.versions["failing"].id
    env.post(f"/v1/models/{MODEL}/promote", json={"version": failing})
    env.post(f"/v1/models/{MODEL}/promote", role="viewer", json={"version": failing})
    env.post(f"/v1/models/{MODEL}/promote", json={"version": failing, "force": True,
                                                  "reason": "ok"})
    log = env.get("/v1/audit", role="admin").json()
    promotions = [e for e in reversed(log) if e["action"] == "promote"]
    assert [(e["outcome"], e["status"], e["key_name"]) for e in promotions] == [
        ("refused", 409, "test-analyst"), ("denied", 403, "test-viewer"),
        ("ok", 200, "test-analyst")]
    assert promotions[0]["target"] == f"{MODEL}/{failing}"
    assert all(e["at"] for e in promotions)
    assert_error(env.get("/v1/audit", role="analyst"), 403)


def tiny_files(**replace: str) -> list[tuple[str, tuple[str, bytes]]]:
    files = {**TINY, **replace}
    return [("files", (name, text.encode())) for name, text in files.items()]


def test_a_valid_upload_is_stored_by_content_hash(env):
    first = env.post("/v1/datasets", files=tiny_files(), data={"name": "tiny_upload"})
    assert first.status_code == 201, first.text
    body = first.json()
    assert len(body["hash"]) == 64 and body["created"] is True
    assert body["summary"]["cells"] == 12 and body["name"] == "tiny"
    stored = env.settings.datasets_dir / body["hash"]
    assert (stored / "population.csv").exists()
    from gapmodel.data import load_dataset

    assert load_dataset(stored).hash == body["hash"]
    again = env.post("/v1/datasets", files=tiny_files())
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["hash"] == body["hash"]
    got = env.get(f"/v1/datasets/{body['hash']}")
    assert got.status_code == 200 and got.json()["summary"]["cells"] == 12
    assert not list((env.settings.datasets_dir / ".incoming").iterdir())


def test_a_bad_upload_lists_each_problem(env):
    population = TINY["population.csv"].replace("P2,s3,100", "P2,s3,-4")
    response = env.post("/v1/datasets", files=tiny_files(**{
        "population.csv": population,
        "strata.csv": TINY["strata.csv"].replace("s4,40-59,M,Black", "s4,40-59,M,")}))
    error = assert_error(response, 422, "invalid_dataset")
    problems = error["details"]["problems"]
    errors = [p for p in problems if p["severity"] == "error"]
    assert {p["file"] for p in errors} == {"population.csv", "strata.csv"}
    negative = next(p for p in errors if p["file"] == "population.csv")
    assert negative["column"] == "population" and negative["rule"]
    assert negative["line"] == TINY["population.csv"].splitlines().index("P2,s3,100") + 1
    assert negative["row"] == negative["line"] - 1
    assert all({"file", "line", "row", "column", "rule", "message"} <= set(p)
               for p in problems)
    assert not list((env.settings.datasets_dir / ".incoming").iterdir())


def test_upload_limits_and_names(tmp_path):
    with start_env(tmp_path, {}, max_upload_bytes=2000, max_upload_files=3) as env:
        big = [("files", ("population.csv", b"area,stratum,population\n" * 200))]
        assert_error(env.post("/v1/datasets", files=big), 413, "payload_too_large")
        assert_error(env.post("/v1/datasets", files=tiny_files()[:5]), 413)
        bad = [("files", ("../../etc.csv", b"a\n1\n")), ("files", ("x.exe", b"1"))]
        assert_error(env.post("/v1/datasets", files=bad), 422, "invalid_upload")
        assert_error(env.post("/v1/datasets", data={"name": "x"}), 422)
        streamed = env.client.post("/v1/datasets", headers={
            **env.headers("analyst"), "content-type": "multipart/form-data; boundary=b"},
            content=iter([b"--b\r\n" + b"x" * 1500, b"y" * 1500]))
        assert_error(streamed, 413)


def test_keys_from_the_command_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--role", "outreach", "--name", "team",
                               "--database-url", url])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[-1]
    db = Database(url)
    row = db.find_key(key)
    assert row is not None and row.role == "outreach" and row.name == "team"
    assert key not in (tmp_path / "keys.db").read_bytes().decode("latin-1")
    listed = runner.invoke(cli, ["keys", "list", "--database-url", url])
    assert "outreach" in listed.stdout and key not in listed.stdout
    assert runner.invoke(cli, ["keys", "revoke", str(row.id), "--database-url",
                               url]).exit_code == 0
    assert db.find_key(key) is None
    assert runner.invoke(cli, ["keys", "create", "--role", "boss", "--database-url",
                               url]).exit_code == 2
    demo = tmp_path / "demo-key"
    first = runner.invoke(cli, ["keys", "demo", "--path", str(demo), "--database-url", url])
    second = runner.invoke(cli, ["keys", "demo", "--path", str(demo), "--database-url", url])
    assert first.stdout == second.stdout and db.find_key(first.stdout.strip()).role == \
        "analyst"
