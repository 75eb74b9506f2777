"""Fit jobs in a process pool (spawn context: PyTensor compiles and samples in a fresh
process, never in a web request or thread). Job state lives in the database, so any
web process can answer for any job.

Cancelling a queued job drops it; cancelling a running one marks it cancelled and stops
its worker process (the pool is then rebuilt and jobs still queued are resubmitted).
At start-up, jobs left queued or running by a web process that no longer exists on this
host are marked failed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TYPE_CHECKING

from api.db import Database, FitJob, now
from api.errors import ApiError
from api.settings import Settings
from api.worker import FINAL, run_job

if TYPE_CHECKING:
    from api.metrics import Metrics

log = logging.getLogger("api.jobs")
HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobRunner:
    """Submits fit jobs to a ProcessPoolExecutor and keeps their rows right."""

    def __init__(self, settings: Settings, db: Database, metrics: Metrics | None = None):
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.settings.fit_workers,
                    mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
            return self._pool

    def submit(self, job: FitJob, dataset_dir: str | None) -> None:
        args = (job.id, self.db.url, str(self.settings.registry.resolve()),
                self.settings.fit_function, dataset_dir,
                str(self.settings.data_dir) if self.settings.data_dir else None)
        future = self._executor().submit(run_job, *args)
        with self._lock:
            self._futures[job.id] = future
        future.add_done_callback(partial(self._done, job.id, dataset_dir))

    def _done(self, job_id: str, dataset_dir: str | None, future: Future) -> None:
        """Done callback. It may run in the pool's management thread while that holds the
        pool's shutdown lock, so the work (which may rebuild the pool) goes to a thread."""
        threading.Thread(target=self._finish, args=(job_id, dataset_dir, future),
                         name=f"fit-job-{job_id[:8]}", daemon=True).start()

    def _finish(self, job_id: str, dataset_dir: str | None, future: Future) -> None:
        with self._lock:
            self._futures.pop(job_id, None)
        if future.cancelled():
            return
        error = future.exception()
        if isinstance(error, BrokenProcessPool):
            self._rebuild()
            row = self.db.job(job_id)
            if row is not None and row.status == "queued":
                log.info("resubmitting queued job %s after a worker stopped", job_id)
                self.submit(row, dataset_dir)
                return
            self.db.update_job(job_id, unless=FINAL, status="failed", finished=now(),
                               phase="failed", error="the worker process stopped")
        elif error is not None:
            self.db.update_job(job_id, unless=FINAL, status="failed", finished=now(),
                               phase="failed", error=f"{type(error).__name__}: {error}")
        row = self.db.job(job_id)
        if row is not None and self.metrics is not None:
            self.metrics.jobs.labels(row.status).inc()
        log.info("fit job %s ended: %s", job_id, row.status if row else "gone")

    def _rebuild(self) -> None:
        with self._lock:
            pool = self._pool
            if pool is not None and getattr(pool, "_broken", False):
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=False)

    def cancel(self, job_id: str) -> FitJob:
        """Cancel a queued or running job; 409 when it has already ended."""
        row = self.db.job(job_id)
        if row is None:
            raise ApiError(404, f"no fit job '{job_id}'")
        if row.status in FINAL:
            raise ApiError(409, f"fit job {job_id} has already {row.status}",
                           code="job_finished")
        with self._lock:
            future = self._futures.get(job_id)
        if future is not None and future.cancel():
            return self.db.update_job(job_id, unless=FINAL, status="cancelled",
                                      finished=now(), phase="cancelled")
        row = self.db.update_job(job_id, unless=FINAL, status="cancelled", finished=now(),
                                 phase="cancelled")
        host = row.owner.split(":", 1)[0] if row.owner else ""
        if row.worker_pid and host == HOST and pid_alive(row.worker_pid):
            log.info("stopping worker %d of cancelled job %s", row.worker_pid, job_id)
            with contextlib.suppress(ProcessLookupError):
                os.kill(row.worker_pid, signal.SIGKILL)
        return row

    def recover(self) -> list[str]:
        """Mark failed the jobs left queued or running by a web process that is gone."""
        failed = []
        for row in self.db.jobs(status=("queued", "running"), limit=10_000):
            host, _, rest = (row.owner or "").partition(":")
            pid = int(rest.split(":", 1)[0]) if rest.split(":", 1)[0].isdigit() else None
            gone = not row.owner or (host == HOST and (
                pid is None or pid == os.getpid() or not pid_alive(pid)))
            if gone and row.owner != self.owner:
                self.db.update_job(row.id, unless=FINAL, status="failed", finished=now(),
                                   phase="failed",
                                   error="interrupted: the service stopped while the job "
                                   f"was {row.status}")
                failed.append(row.id)
        if failed:
            log.warning("marked %d interrupted fit job(s) failed", len(failed))
        return failed

    def active(self) -> list[str]:
        with self._lock:
            return list(self._futures)

    def shutdown(self) -> None:
        """Stop accepting work; stop running workers; their jobs are marked failed."""
        with self._lock:
            pool, self._pool = self._pool, None
            ids = list(self._futures)
        for job_id in ids:
            row = self.db.update_job(job_id, unless=FINAL, status="failed", finished=now(),
                                     phase="failed", error="interrupted: the service stopped")
            if row is not None and row.worker_pid and pid_alive(row.worker_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(row.worker_pid, signal.SIGKILL)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
