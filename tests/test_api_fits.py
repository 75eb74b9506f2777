"""Fit jobs: queued in a process pool, followed, cancelled; a failed or cancelled fit
never changes the active version; jobs left running by a stopped service are failed."""

from __future__ import annotations

import time

import pytest
from api_support import MODEL, assert_error, registry_with_versions, start_env
from conftest import TINY

from api.db import Database
from gapmodel.registry import Registry

SPEC = {"name": "tiny_fit", "condition": "test",
        "data": {"kind": "directory", "path": "unused"},
        "sampler": {"chains": 2, "tune": 50, "draws": 50, "seed": 3}, "derived_draws": 20}


def upload(env) -> str:
    files = [("files", (name, text.encode())) for name, text in TINY.items()]
    response = env.post("/v1/datasets", files=files)
    assert response.status_code in (200, 201), response.text
    return response.json()["hash"]


def wait(env, job_id: str, states: tuple[str, ...], timeout: float = 240,
         phase: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = env.get(f"/v1/fits/{job_id}").json()
        if job["status"] in states and phase in (None, job["phase"]):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def test_a_fit_job_runs_saves_and_promotes_when_asked(tmp_path):
    with start_env(tmp_path, {}) as env:
        digest = upload(env)
        started = env.post("/v1/fits", json={"spec": SPEC, "dataset": digest,
                                             "promote": True})
        assert started.status_code == 202, started.text
        job = started.json()
        assert started.headers["Location"] == f"/v1/fits/{job['id']}"
        assert job["status"] in ("queued", "running") and job["model"] == "tiny_fit"
        done = wait(env, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["error"]
        assert done["progress"] == 1.0 and done["phase"] == "done"
        assert done["gate"]["passed"] is True and done["promoted"] is True
        assert {"parameter", "r_hat", "ess_bulk"} <= set(done["diagnostics"][0])
        store = Registry(env.settings.registry)
        assert store.active_id("tiny_fit") == done["version"]
        assert store.load(done["version"]).meta["dataset"]["hash"] == digest
        assert env.get("/v1/fits").json()[0]["id"] == job["id"]
        assert_error(env.delete(f"/v1/fits/{job['id']}"), 409, "job_finished")
        served = env.get("/v1/models/tiny_fit/estimates").json()
        assert served["version"] == done["version"]
        assert store.load(done["version"]).meta["start"] == {"kind": "cold"}
        # a spec with warm-start lengths refits from the active version's posterior
        warm_spec = {**SPEC, "sampler": {**SPEC["sampler"], "warm_start": {"draws": 60}}}
        again = env.post("/v1/fits", json={"spec": warm_spec, "dataset": digest})
        refit = wait(env, again.json()["id"], ("succeeded", "failed"))
        assert refit["status"] == "succeeded", refit["error"]
        assert store.load(refit["version"]).meta["start"] == {"kind": "warm",
                                                              "from": done["version"]}
        detail = env.get(f"/v1/versions/{refit['version']}").json()
        assert detail["start"] == {"kind": "warm", "from": done["version"]}


@pytest.mark.parametrize("fit_function", ["api_fakes:failing_gate_fit",
                                          "api_fakes:broken_fit"])
def test_a_failed_fit_never_changes_the_active_version(tmp_path, fit_function):
    versions = registry_with_versions(tmp_path)
    spec = {**SPEC, "name": MODEL}
    with start_env(tmp_path, versions, fit_function=fit_function) as env:
        digest = upload(env)
        job = env.post("/v1/fits", json={"spec": spec, "dataset": digest,
                                         "promote": True}).json()
        done = wait(env, job["id"], ("succeeded", "failed"))
        store = Registry(env.settings.registry)
        assert store.active_id(MODEL) == versions["active"].id
        assert done["promoted"] is False
        if fit_function.endswith("broken_fit"):
            assert done["status"] == "failed" and "diverged" in done["error"]
            assert len(store.versions(MODEL)) == 2
        else:  # saved for inspection, never promoted
            assert done["status"] == "succeeded" and not done["gate"]["passed"]
            assert len(store.versions(MODEL)) == 3


def test_cancelling_a_running_fit_stops_it_and_changes_nothing(tmp_path):
    versions = registry_with_versions(tmp_path)
    with start_env(tmp_path, versions, fit_function="api_fakes:slow_fit") as env:
        digest = upload(env)
        spec = {**SPEC, "name": MODEL}
        first = env.post("/v1/fits", json={"spec": spec, "dataset": digest,
                                           "promote": True}).json()
        queued = env.post("/v1/fits", json={"spec": spec, "dataset": digest}).json()
        # one worker: the second job waits; cancelling it drops it
        assert env.delete(f"/v1/fits/{queued['id']}").json()["status"] == "cancelled"
        wait(env, first["id"], ("running",), phase="sampling")
        cancelled = env.delete(f"/v1/fits/{first['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        pid = Database(env.settings.database_url).job(first["id"]).worker_pid
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(pid)
        assert wait(env, first["id"], ("cancelled",))["version"] is None
        store = Registry(env.settings.registry)
        assert store.active_id(MODEL) == versions["active"].id
        assert len(store.versions(MODEL)) == 2
        assert env.get(f"/v1/fits/{queued['id']}").json()["status"] == "cancelled"


def _alive(pid: int | None) -> bool:
    import os

    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a killed child not yet reaped by its pool is a zombie: gone for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_requests_for_fits_are_checked_before_queueing(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "named.yaml").write_text("name: named\nsampler: {draws: 10}\n")
    with start_env(tmp_path, {}) as env:
        assert_error(env.post("/v1/fits", json={"spec": "missing"}), 404)
        assert_error(env.post("/v1/fits", json={"spec": {"name": "x", "bogus": 1}}), 422,
                     "invalid_spec")
        assert_error(env.post("/v1/fits", json={"spec": SPEC}), 422, "invalid_spec")
        assert_error(env.post("/v1/fits", json={"spec": SPEC, "dataset": "f" * 64}), 404)
        assert_error(env.post("/v1/fits", json={"spec": "../etc/passwd"}), 404)
        assert_error(env.post("/v1/fits", json={"spec": "named", "draws": 1}), 422)
        assert_error(env.get("/v1/fits/nope"), 404)
        assert_error(env.delete("/v1/fits/nope"), 404)
        assert env.get("/v1/fits").json() == []


def test_jobs_left_running_by_a_stopped_service_are_marked_failed(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.db'}"
    db = Database(url)
    import socket

    host = socket.gethostname()
    dead = db.create_job(model="m", spec={}, status="running", owner=f"{host}:999999999:x")
    queued = db.create_job(model="m", spec={}, status="queued", owner=f"{host}:999999998:y")
    elsewhere = db.create_job(model="m", spec={}, status="running", owner="other-host:1:z")
    done = db.create_job(model="m", spec={}, status="succeeded", owner=f"{host}:999999999:x")
    with start_env(tmp_path, {}, database_url=url) as env:
        states = {j: env.get(f"/v1/fits/{j}").json() for j in
                  (dead.id, queued.id, elsewhere.id, done.id)}
    assert states[dead.id]["status"] == "failed"
    assert "interrupted" in states[dead.id]["error"]
    assert states[queued.id]["status"] == "failed"
    assert states[elsewhere.id]["status"] == "running"
    assert states[done.id]["status"] == "succeeded"
