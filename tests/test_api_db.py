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
