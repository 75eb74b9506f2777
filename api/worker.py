"""The fit job as it runs in a worker process (never in the web process).

It records its own progress in the job row, saves a version, and promotes it only when
the request asked for it and the fit passed the gate. A cancelled or failed job never
touches the active version: the worker rereads the row between phases (a fit on a Dask
cluster cannot be stopped, so its worker runs on and stops at the next check), and it
enters phase "promoting", which a cancel can no longer interrupt, only while the job is
still running.
"""

from __future__ import annotations

import importlib
import math
import os
import traceback
from pathlib import Path
from typing import Any

from api.db import Database, FitJob, now

FINAL = ("succeeded", "failed", "cancelled")


def resolve(path: str) -> Any:
    """``module:attribute`` to the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities as None, recursively."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_job(job_id: str, database_url: str, registry: str, fit_function: str,
            dataset_dir: str | None, data_dir: str | None) -> str:
    """Run one fit job to its end; returns its final status."""
    db = Database(database_url, create=False)
    try:
        return _run(db, job_id, registry, fit_function, dataset_dir, data_dir)
    except BaseException as exc:
        detail = f"{type(exc).__name__}: {exc}"
        tail = traceback.format_exc(limit=3)
        db.update_job(job_id, unless=FINAL, status="failed", finished=now(),
                      phase="failed", error=f"{detail}\n{tail}"[:4000])
        return "failed"
    finally:
        db.dispose()


def _stopped(row: FitJob | None) -> str | None:
    """The status of a job that is no longer running; None while it runs."""
    if row is None:
        return "failed"
    return None if row.status == "running" else row.status


def _run(db: Database, job_id: str, registry: str, fit_function: str,
         dataset_dir: str | None, data_dir: str | None) -> str:
    """Each check of the row that finds the job no longer running (cancelled, or failed
    by a service that stopped) ends the job with nothing saved or promoted."""
    from gapmodel.data import load_dataset
    from gapmodel.registry import Registry
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec

    row = db.update_job(job_id, unless=FINAL, status="running", started=now(),
                        worker_pid=os.getpid(), phase="loading data", progress=0.02)
    if stopped := _stopped(row):
        return stopped
    spec = ModelSpec.model_validate(row.spec)
    if dataset_dir is not None:
        dataset = load_dataset(Path(dataset_dir))
        if row.dataset_hash and dataset.hash != row.dataset_hash:
            raise RuntimeError(f"stored dataset {row.dataset_hash} reads back with hash "
                               f"{dataset.hash}; refusing to fit it")
    else:
        dataset, _ = load_spec_data(spec, data_dir)
    if stopped := _stopped(db.update_job(job_id, unless=FINAL, phase="sampling",
                                         progress=0.1, dataset_hash=dataset.hash)):
        return stopped
    store = Registry(registry)
    result = resolve(fit_function)(dataset, spec, progress=False,
                                   start_from=store.start_from(spec))
    if stopped := _stopped(db.job(job_id)):
        return stopped
    db.update_job(job_id, unless=FINAL, phase="saving", progress=0.9)
    version = store.save(result, dataset)
    promote = row.promote and result.passed and result.method == "nuts"
    if promote:
        if stopped := _stopped(db.update_job(job_id, unless=FINAL, phase="promoting",
                                             version=version)):
            return stopped
        store.promote(version, reason=f"fit job {job_id}")
    # once promoted, the row says so even if the service marked it failed meanwhile
    db.update_job(job_id, unless=() if promote else FINAL, status="succeeded",
                  finished=now(), phase="done", progress=1.0, version=version,
                  promoted=promote, error=None, gate=finite(result.gate),
                  diagnostics=finite(result.diagnostics.reset_index(names="parameter")
                                     .to_dict("records")))
    return "succeeded"
