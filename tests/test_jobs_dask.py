"""Fit jobs on a Dask distributed cluster (GAPMODEL_CLUSTER_URL): a real scheduler and
one single-threaded worker, started as `dask` processes, run the stand-in fit functions
of api_fakes; the app submits to them through the API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from api_support import MODEL, assert_error, registry_with_versions, settings_for, start_env
from test_api_fits import SPEC, upload, wait

from api.db import Database
from api.jobs import DaskCluster, JobRunner, ProcessPool
from gapmodel.registry import Registry

distributed = pytest.importorskip("distributed")

TESTS = Path(__file__).parent


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=cwd, env=env,
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def running_cluster(where: Path):
    """A scheduler and one single-threaded worker; yields (their processes, a client of
    the test's own to look at the worker)."""
    file = where / "scheduler.json"
    started = []
    try:
        started.append(_start(["scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(file)],
                              where, where / "scheduler.log"))
        started.append(_start(["worker", "--scheduler-file", str(file), "--nworkers", "1",
                               "--nthreads", "1", "--no-dashboard"],
                              where, where / "worker.log"))
        client = distributed.Client(scheduler_file=str(file), timeout=60,
                                    set_as_default=False)
        try:
            client.wait_for_workers(1, timeout=60)
            yield started, client
        finally:
            client.close()
    finally:
        for process in reversed(started):
            _stop(process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(scheduler address, a client of the test's own), shared by the module's tests."""
    with running_cluster(tmp_path_factory.mktemp("dask")) as (_, client):
        yield client.scheduler.address, client


def _idle(client, timeout: float = 60) -> None:
    """Until the worker runs nothing (a cancelled task runs on until its fit returns)."""
    deadline = time.monotonic() + timeout
    while any(client.run(lambda dask_worker: dask_worker.state.executing_count).values()):
        assert time.monotonic() < deadline, "the Dask worker is still busy"
        time.sleep(0.2)


def test_the_cluster_url_picks_where_fits_run(tmp_path, monkeypatch):
    db = Database(f"sqlite:///{tmp_path / 'api.db'}")
    monkeypatch.setenv("GAPMODEL_CLUSTER_URL", "")
    assert isinstance(JobRunner(settings_for(tmp_path), db).executor, ProcessPool)
    monkeypatch.setenv("GAPMODEL_CLUSTER_URL", "tcp://scheduler:8786")
    runner = JobRunner(settings_for(tmp_path), db)  # connects at the first fit, not here
    assert isinstance(runner.executor, DaskCluster)
    assert runner.executor.url == "tcp://scheduler:8786"
    db.dispose()


def test_a_fit_job_runs_on_the_dask_worker_and_promotes(tmp_path, cluster, monkeypatch):
    address, client = cluster
    monkeypatch.setenv("GAPMODEL_CLUSTER_URL", address)
    with start_env(tmp_path, {}) as env:
        digest = upload(env)
        started = env.post("/v1/fits", json={"spec": SPEC, "dataset": digest,
                                             "promote": True})
        assert started.status_code == 202, started.text
        done = wait(env, started.json()["id"], ("succeeded", "failed", "cancelled"),
                    timeout=120)
        assert done["status"] == "succeeded", done["error"]
        assert done["promoted"] is True and done["phase"] == "done"
        assert Registry(env.settings.registry).active_id("tiny_fit") == done["version"]
        assert env.get("/v1/models/tiny_fit/estimates").json()["version"] == \
            done["version"]
        row = Database(env.settings.database_url).job(done["id"])
        assert row.worker_pid in client.run(os.getpid).values()  # the Dask worker's


def test_a_fit_that_raises_on_the_cluster_fails_the_job(tmp_path, cluster):
    versions = registry_with_versions(tmp_path)
    with start_env(tmp_path, versions, cluster_url=cluster[0],
                   fit_function="api_fakes:broken_fit") as env:
        digest = upload(env)
        job = env.post("/v1/fits", json={"spec": {**SPEC, "name": MODEL},
                                         "dataset": digest, "promote": True}).json()
        done = wait(env, job["id"], ("succeeded", "failed", "cancelled"), timeout=120)
        assert done["status"] == "failed" and "diverged everywhere" in done["error"]
        store = Registry(env.settings.registry)
        assert store.active_id(MODEL) == versions["active"].id
        assert len(store.versions(MODEL)) == 2


def test_cancelling_a_fit_on_the_cluster_changes_nothing(tmp_path, cluster):
    address, client = cluster
    versions = registry_with_versions(tmp_path)
    with start_env(tmp_path, versions, cluster_url=address,
                   fit_function="api_fakes:pausing_fit") as env:
        digest = upload(env)
        spec = {**SPEC, "name": MODEL}
        first = env.post("/v1/fits", json={"spec": spec, "dataset": digest,
                                           "promote": True}).json()
        queued = env.post("/v1/fits", json={"spec": spec, "dataset": digest}).json()
        wait(env, first["id"], ("running",), phase="sampling", timeout=120)
        # one worker thread: the second job waits; cancelling it drops its task
        assert env.delete(f"/v1/fits/{queued['id']}").json()["status"] == "cancelled"
        cancelled = env.delete(f"/v1/fits/{first['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert_error(env.delete(f"/v1/fits/{first['id']}"), 409, "job_finished")
        _idle(client)  # the fit returned on the worker, which then saw the job cancelled
        for job in (first, queued):
            row = env.get(f"/v1/fits/{job['id']}").json()
            assert row["status"] == "cancelled" and row["version"] is None
            assert row["promoted"] is False
        assert Database(env.settings.database_url).job(queued["id"]).started is None
        store = Registry(env.settings.registry)
        assert store.active_id(MODEL) == versions["active"].id
        assert len(store.versions(MODEL)) == 2
        assert env.get(f"/v1/models/{MODEL}/estimates").json()["version"] == \
            versions["active"].id


def test_a_job_whose_scheduler_stops_is_failed_not_left_running(tmp_path):
    with running_cluster(tmp_path) as ((scheduler, _), client), \
            start_env(tmp_path, {}, cluster_url=client.scheduler.address, cluster_timeout=1,
                      fit_function="api_fakes:pausing_fit") as env:
        digest = upload(env)
        job = env.post("/v1/fits", json={"spec": SPEC, "dataset": digest,
                                          "promote": True}).json()
        wait(env, job["id"], ("running",), phase="sampling", timeout=120)
        _stop(scheduler)
        done = wait(env, job["id"], ("succeeded", "failed", "cancelled"), timeout=30)
        assert done["status"] == "failed" and "scheduler" in done["error"]
        # the fit goes on running on the worker, which will find the job failed (as a
        # cancelled one above) and save nothing; a later fit tries to connect again
        again = env.post("/v1/fits", json={"spec": SPEC, "dataset": digest})
        assert again.status_code == 202
        again = wait(env, again.json()["id"], ("succeeded", "failed"), timeout=30)
        assert again["status"] == "failed"
        assert "cannot reach the Dask scheduler" in again["error"]


def test_an_unreachable_cluster_fails_the_job_with_a_readable_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    with start_env(tmp_path, {}, cluster_url=url, cluster_timeout=1) as env:
        digest = upload(env)
        started = env.post("/v1/fits", json={"spec": SPEC, "dataset": digest})
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["status"] == "failed" and job["phase"] == "failed"
        assert f"cannot reach the Dask scheduler at {url}" in job["error"]
        assert env.get(f"/v1/fits/{job['id']}").json()["status"] == "failed"
        assert len(env.get("/v1/fits").json()) == 1


def test_recovery_leaves_cluster_jobs_of_a_live_web_process_alone(tmp_path, cluster):
    """The owner is the web process that submitted the job; the worker pid is the Dask
    worker's, on another host, and is not looked at."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    db = Database(url)
    host = socket.gethostname()
    live = db.create_job(model="m", spec={}, status="running", worker_pid=999999999,
                         owner=f"{host}:{os.getppid()}:web")
    gone = db.create_job(model="m", spec={}, status="running", worker_pid=os.getpid(),
                         owner=f"{host}:999999999:web")
    with start_env(tmp_path, {}, database_url=url, cluster_url=cluster[0]) as env:
        states = {j.id: env.get(f"/v1/fits/{j.id}").json() for j in (live, gone)}
    assert states[live.id]["status"] == "running"
    assert states[gone.id]["status"] == "failed"
    assert "interrupted" in states[gone.id]["error"]
