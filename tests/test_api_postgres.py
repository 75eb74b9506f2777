"""The service's database layer on PostgreSQL (the same SQLAlchemy code as SQLite).

Needs $GAPMODEL_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/db);
`.ci/run` starts a throwaway server with scripts/postgres.sh and sets it.
"""

from __future__ import annotations

import os
import time

import pytest
from api_support import MODEL, registry_with_versions, start_env
from conftest import TINY

from api.db import Base, Database, DatasetRow

URL = os.environ.get("GAPMODEL_TEST_POSTGRES_URL")
pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not URL, reason="GAPMODEL_TEST_POSTGRES_URL is not set: "
                                 "no PostgreSQL server to test against")]


@pytest.fixture
def db():
    database = Database(URL, create=False)
    Base.metadata.drop_all(database.engine)
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def test_keys_audit_datasets_and_jobs(db):
    row, key = db.create_key("analyst", "pg")
    assert db.find_key(key).id == row.id and db.find_key(key + "x") is None
    assert [k.role for k in db.api_keys()] == ["analyst"]
    db.revoke_key(row.id)
    assert db.find_key(key) is None and db.api_keys()[0].revoked is not None
    db.audit(key=row, action="promote", target="m/v", outcome="ok", status=200)
    assert [(e.action, e.key_name) for e in db.audit_log()] == [("promote", "pg")]
    stored = DatasetRow(hash="a" * 64, name="d", path="/x", summary={"cells": 3})
    db.add_dataset(stored)
    assert db.add_dataset(DatasetRow(hash="a" * 64, name="other", path="/y",
                                     summary={})).name == "d"
    job = db.create_job(model="m", spec={"name": "m", "nested": {"k": [1, 2]}})
    db.update_job(job.id, status="running", progress=0.5, phase="promoting")
    assert db.update_job(job.id, unless_phase=("promoting",), status="cancelled"
                         ).status == "running"
    db.update_job(job.id, status="cancelled")
    assert db.update_job(job.id, unless=("cancelled",), status="succeeded").status == \
        "cancelled"
    got = db.job(job.id)
    assert got.spec["nested"] == {"k": [1, 2]} and got.progress == 0.5
    assert [j.id for j in db.jobs(status=("cancelled",))] == [job.id]


def test_the_service_runs_on_postgres(db, tmp_path):
    versions = registry_with_versions(tmp_path)
    with start_env(tmp_path, versions, database_url=URL) as env:
        failing = versions["failing"].id
        assert env.post(f"/v1/models/{MODEL}/promote", json={"version": failing}
                        ).status_code == 409
        assert env.get(f"/v1/models/{MODEL}/estimates", role="viewer").status_code == 200
        files = [("files", (n, t.encode())) for n, t in TINY.items()]
        digest = env.post("/v1/datasets", files=files).json()["hash"]
        spec = {"name": "pg_fit", "data": {"kind": "directory", "path": "unused"},
                "derived_draws": 20}
        job = env.post("/v1/fits", json={"spec": spec, "dataset": digest}).json()
        deadline = time.monotonic() + 240
        while (state := env.get(f"/v1/fits/{job['id']}").json())["status"] not in (
                "succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert state["status"] == "succeeded", state["error"]
        actions = [e["action"] for e in env.get("/v1/audit", role="admin").json()]
        assert {"promote", "upload dataset", "start fit"} <= set(actions)
