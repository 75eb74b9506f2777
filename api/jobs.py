"""Fit jobs outside the web process: in a local process pool (spawn context: PyTensor
compiles and samples in a fresh process, never in a web request or thread), or on a Dask
distributed cluster when ``GAPMODEL_CLUSTER_URL`` names its scheduler. Job state lives in
the database, so any web process can answer for any job, and the worker
(`api.worker.run_job`) records its own progress there.

Cancelling marks the job's row cancelled at once. In the pool, a queued job is dropped
and a running one's worker process is stopped (the pool is then rebuilt and jobs still
queued are resubmitted). On a cluster, the task is cancelled: a queued one never runs; a
running one cannot be stopped on its remote worker, so the fit runs on there, and the
worker, which checks the row between phases, discards its result. A job that has begun
promoting its version can no longer be cancelled.
At start-up, jobs left queued or running by a web process that no longer exists on this
host are marked failed (wherever they ran).
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
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TYPE_CHECKING, Any

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


class ProcessPool:
    """Fits in a spawn process pool on this host: one fresh process per fit."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, job_id: str, args: tuple[Any, ...]) -> Future:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)
            return self._pool.submit(run_job, *args)

    @staticmethod
    def error(future: Future) -> BaseException | None:
        """What a done future ended with: None, its exception, or CancelledError."""
        return CancelledError() if future.cancelled() else future.exception()

    @staticmethod
    def cancel(future: Future | None, row: FitJob) -> None:
        """Drop a queued job; stop the worker process of a running one on this host."""
        if future is not None and future.cancel():
            return
        host = row.owner.split(":", 1)[0] if row.owner else ""
        if row.worker_pid and host == HOST and pid_alive(row.worker_pid):
            log.info("stopping worker %d of fit job %s", row.worker_pid, row.id)
            with contextlib.suppress(ProcessLookupError):
                os.kill(row.worker_pid, signal.SIGKILL)

    def rebuild(self) -> None:
        """After a worker process died: a broken pool takes no more work."""
        with self._lock:
            pool = self._pool
            if pool is not None and getattr(pool, "_broken", False):
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=False)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class DaskCluster:
    """Fits as tasks on a Dask distributed cluster. Its client connects at the first
    submission, and again at the next one after it lost the scheduler (which cancels
    its futures: their jobs are then failed). Workers run `run_job` in a
    thread, so a running task cannot be stopped; a cancelled one's result is discarded
    by the worker itself."""

    def __init__(self, url: str, timeout: float):
        try:
            import distributed  # noqa: F401  (the optional extra 'cluster')
        except ImportError as exc:
            raise RuntimeError("GAPMODEL_CLUSTER_URL is set but dask.distributed is not "
                               "installed: pip install 'gapmodel[cluster]'") from exc
        self.url = url
        self.timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def _connected(self) -> Any:
        from distributed import Client

        with self._lock:
            if self._client is None or self._client.status != "running":
                if self._client is not None:  # it lost the scheduler (and its futures)
                    with contextlib.suppress(Exception):
                        self._client.close(timeout=self.timeout)
                try:
                    self._client = Client(self.url, timeout=self.timeout,
                                          set_as_default=False)
                except Exception as exc:  # OSError when it does not answer in time
                    raise RuntimeError(f"cannot reach the Dask scheduler at {self.url} "
                                       f"({exc})") from None
                log.info("fit jobs run on the Dask cluster at %s", self.url)
            return self._client

    def submit(self, job_id: str, args: tuple[Any, ...]) -> Any:
        return self._connected().submit(run_job, *args, key=f"gapmodel-fit-{job_id}",
                                        pure=False)

    def error(self, future: Any) -> BaseException | None:
        """What a done Dask future ended with (its status: 'finished', 'error',
        'cancelled' or 'lost')."""
        if future.status == "cancelled":
            return CancelledError()
        if future.status == "lost":
            return RuntimeError("the cluster lost the fit's task")
        if future.status == "error":
            try:
                return future.exception(timeout=self.timeout)
            except Exception as exc:  # the scheduler went away meanwhile
                return exc
        return None

    @staticmethod
    def cancel(future: Any, row: FitJob) -> None:
        """Cancel the task (a job started by another web process has no future here:
        its worker sees the row cancelled when it starts or ends the fit)."""
        if future is not None:
            try:
                future.cancel()
            except Exception as exc:  # the row is cancelled: the worker will see it
                log.warning("could not cancel the task of fit job %s: %s", row.id, exc)

    def rebuild(self) -> None:
        pass

    def shutdown(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=self.timeout)


class JobRunner:
    """Submits fit jobs to the process pool or the cluster and keeps their rows right."""

    def __init__(self, settings: Settings, db: Database, metrics: Metrics | None = None):
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.executor: ProcessPool | DaskCluster = (
            DaskCluster(settings.cluster_url, settings.cluster_timeout)
            if settings.cluster_url else ProcessPool(settings.fit_workers))
        self._futures: dict[str, Any] = {}
        self._lock = threading.Lock()

    def submit(self, job: FitJob, dataset_dir: str | None) -> None:
        """Hand a job to the executor; one that cannot take it gets the job failed."""
        data_dir = self.settings.data_dir
        args = (job.id, self.db.url, str(self.settings.registry.resolve()),
                self.settings.fit_function, dataset_dir,
                str(data_dir.resolve()) if data_dir else None)
        try:
            future = self.executor.submit(job.id, args)
        except Exception as exc:
            log.error("fit job %s could not be submitted: %s", job.id, exc)
            self.db.update_job(job.id, unless=FINAL, status="failed", finished=now(),
                               phase="failed", error=f"not submitted: {exc}")
            self._count(job.id)
            return
        with self._lock:
            self._futures[job.id] = future
        future.add_done_callback(partial(self._done, job.id, dataset_dir))

    def _done(self, job_id: str, dataset_dir: str | None, future: Any) -> None:
        """Done callback. It may run in the pool's management thread while that holds the
        pool's shutdown lock, so the work (which may rebuild the pool) goes to a thread."""
        threading.Thread(target=self._finish, args=(job_id, dataset_dir, future),
                         name=f"fit-job-{job_id[:8]}", daemon=True).start()

    def _finish(self, job_id: str, dataset_dir: str | None, future: Any) -> None:
        with self._lock:
            self._futures.pop(job_id, None)
        error = self.executor.error(future)
        if isinstance(error, BrokenProcessPool):
            self.executor.rebuild()
            row = self.db.job(job_id)
            if row is not None and row.status == "queued":
                log.info("resubmitting queued job %s after a worker stopped", job_id)
                self.submit(row, dataset_dir)
                return
            reason = "the worker process stopped"
        elif isinstance(error, CancelledError):  # cancel and shutdown end the row first
            reason = "its task was dropped before it ended (did the cluster's scheduler stop?)"
        else:
            reason = f"{type(error).__name__}: {error}" if error is not None else None
        if reason is not None:
            self.db.update_job(job_id, unless=FINAL, status="failed", finished=now(),
                               phase="failed", error=reason)
        self._count(job_id)

    def _count(self, job_id: str) -> None:
        row = self.db.job(job_id)
        if row is not None and self.metrics is not None:
            self.metrics.jobs.labels(row.status).inc()
        log.info("fit job %s ended: %s", job_id, row.status if row else "gone")

    def cancel(self, job_id: str) -> FitJob:
        """Cancel a queued or running job; 409 when it has ended or is promoting."""
        row = self.db.job(job_id)
        if row is None:
            raise ApiError(404, f"no fit job '{job_id}'")
        if row.status not in FINAL:
            row = self.db.update_job(job_id, unless=FINAL, unless_phase=("promoting",),
                                     status="cancelled", finished=now(), phase="cancelled")
            if row is not None and row.status == "cancelled":
                with self._lock:
                    future = self._futures.get(job_id)
                self.executor.cancel(future, row)
                return row
        if row is not None and row.status not in FINAL:
            raise ApiError(409, f"fit job {job_id} is promoting its version: too late to "
                           "cancel", code="job_finished")
        raise ApiError(409, f"fit job {job_id} has already {row.status if row else 'gone'}",
                       code="job_finished")

    def recover(self) -> list[str]:
        """Mark failed the jobs left queued or running by a web process that is gone. The
        owner is the web process that submitted the job (its worker may be elsewhere, on
        a cluster): a job of a live web process, or of another host, is left alone."""
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
        """Stop accepting work; the jobs in flight are marked failed and stopped (on a
        cluster, their workers discard what they were fitting)."""
        with self._lock:
            futures = dict(self._futures)
        for job_id, future in futures.items():
            row = self.db.update_job(job_id, unless=FINAL, status="failed", finished=now(),
                                     phase="failed", error="interrupted: the service stopped")
            if row is not None:
                self.executor.cancel(future, row)
        self.executor.shutdown()
