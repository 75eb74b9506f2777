"""A database made by an earlier version: additive changes are applied at start-up."""

from __future__ import annotations

import sqlite3

import pytest

from api.db import Database


def test_missing_columns_are_added_and_jobs_read(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Database(url).dispose()
    with sqlite3.connect(tmp_path / "old.db") as connection:  # as an earlier schema had it
        connection.execute("ALTER TABLE fit_jobs DROP COLUMN diagnostics")
    db = Database(url)
    columns = {row[1] for row in sqlite3.connect(tmp_path / "old.db").execute(
        "PRAGMA table_info(fit_jobs)")}
    assert "diagnostics" in columns
    job = db.create_job(model="m", spec={}, status="queued")
    assert [j.id for j in db.jobs()] == [job.id]


def test_a_missing_required_column_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    Database(url).dispose()
    with sqlite3.connect(tmp_path / "old.db") as connection:
        connection.execute("ALTER TABLE api_keys DROP COLUMN role")
    with pytest.raises(RuntimeError, match="api_keys lacks the required column role"):
        Database(url)


def test_a_cancellation_is_never_overwritten_by_a_worker_update(tmp_path):
    """The worker's progress updates (unless the job is final) race a cancellation from
    another connection: whenever the cancellation lands, the job ends cancelled, and the
    conditional updates neither fail nor change it afterwards."""
    import threading

    db = Database(f"sqlite:///{tmp_path / 'race.db'}")
    job = db.create_job(model="m", spec={}, status="running")
    errors: list[BaseException] = []
    cancelled = threading.Event()

    def worker() -> None:
        try:
            for i in range(300):
                row = db.update_job(job.id, unless=("cancelled",), status="running",
                                    progress=i / 300)
                if i == 50:
                    cancelled.set()
                if row.status == "cancelled":
                    return
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    cancelled.wait(timeout=30)
    db.update_job(job.id, status="cancelled")
    progress = db.job(job.id).progress
    thread.join(timeout=60)
    assert not errors
    final = db.job(job.id)
    assert final.status == "cancelled" and final.progress == progress
    db.dispose()
