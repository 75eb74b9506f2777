"""Helpers shared by the sampler benchmarks (bench/fit.py, bench/bym2.py).

Each benchmark run goes to a fresh child process (`--one`) that prints one JSON line;
`run_child` starts it in its own process group so that a timeout also stops what the
child started (PyMC's chain processes, R and its chains), and turns a failure or a
timeout into a row with a note.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import resource
import signal
import subprocess
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_line(parallel: int, draws: int | None, tune: int | None = None) -> str:
    """The machine, with the cores this process may use (not all the host has), and the
    run's lengths where it samples (`draws` per chain, and as many warm-up steps unless
    `tune` says otherwise)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    line = (f"machine: {platform.processor() or platform.machine()}, {cores} usable cores; "
            f"{parallel} run(s) at a time")
    if draws is None:
        return line
    if tune is None or tune == draws:
        return f"{line}; tune = draws = {draws} per chain"
    return f"{line}; tune {tune}, draws {draws} per chain"


def has_module(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def add_blas_option(parser) -> None:
    parser.add_argument("--blas-threads", nargs="+", type=int, default=[1],
                        help="BLAS threads per chain, a row for each (0: the library's "
                             "default, one per core; 1: as gapmodel.fit samples)")


def add_revisions_option(parser) -> None:
    parser.add_argument("--revisions", nargs="+", default=[None],
                        help="git revisions of the library, a row for each (default: the "
                             "working tree)")


def limit_blas(threads: int):
    """BLAS threads per chain for this run (0: no limit); a threadpoolctl limiter, to use as
    a context manager or to undo with `restore_original_limits()`."""
    from threadpoolctl import threadpool_limits

    if threads:  # PyMC's chains are processes of their own: they read it at start
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    return threadpool_limits(limits=threads or None, user_api="blas")


def run_child(cmd: list[str], label: dict, timeout: float | None,
              env: dict | None = None) -> dict:
    """Run `cmd` (which prints a JSON row as its last stdout line); the row, or `label`
    with a note when it fails or runs past `timeout` seconds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # the child's group: it and its children
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {**label, "note": f"stopped: not finished in {timeout:.0f} s"}
    if proc.returncode:
        tail = (err.strip().splitlines() or ["failed"])[-1]
        return {**label, "note": tail[:90]}
    return json.loads(out.strip().splitlines()[-1])


def run_at(cmd: list[str], label: dict, tree: Path, rev: str | None,
           timeout: float | None) -> dict:
    """`run_child` with the library imported from `tree` (the checkout of `rev`); the row
    gets a `rev` column (`work`: the working tree)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    return {**run_child(cmd, label, timeout, env), "rev": rev or "work"}


def spec_file(path: str) -> Path:
    """A spec as the library being run has it: from the tree `gapmodel` is imported from
    (a `--revisions` checkout) where it is there, else from this one. A revision's rows thus
    sample that revision's spec, whose fields may differ from this tree's."""
    import gapmodel

    tree = Path(gapmodel.__file__).resolve().parents[1]
    return tree / path if (tree / path).exists() else ROOT / path


@contextlib.contextmanager
def checkouts(revisions: list[str | None]):
    """A source tree per git revision (None: the working tree itself), as temporary
    worktrees removed afterwards; yields {revision: path}."""
    import tempfile

    paths: dict[str | None, Path] = {}
    with tempfile.TemporaryDirectory(prefix="gapmodel-rev-") as tmp:
        try:
            for rev in revisions:
                if rev in paths:  # a revision named twice: rows alternate, one tree
                    continue
                if rev is None:
                    paths[rev] = ROOT
                    continue
                path = Path(tmp) / f"rev{len(paths)}"
                subprocess.run(["git", "worktree", "add", "--detach", "-q", str(path), rev],
                               cwd=ROOT, check=True)
                paths[rev] = path
            yield paths
        finally:
            for rev, path in paths.items():
                if rev is not None:
                    subprocess.run(["git", "worktree", "remove", "--force", str(path)],
                                   cwd=ROOT, check=False)


def min_ess(dataset, names: list[str]) -> tuple[float, str]:
    """Smallest bulk ESS over the scalar or array variables `names`, and which one."""
    import arviz as az
    import numpy as np

    ess = az.ess(dataset[names])
    worst, value = None, np.inf
    for name in names:
        v = float(np.min(ess[name].values))
        if v < value:
            worst, value = name, v
    return value, worst


class PeakMemory:
    """Peak resident memory of this process and all its descendants together, in MB.

    Polls the process tree (psutil) in a thread; without psutil, falls back to the
    largest single process (ru_maxrss of this process and of waited-for children)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if has_module("psutil"):
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(self.interval)

    @property
    def mb(self) -> float:
        single = max(resource.getrusage(who).ru_maxrss
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
        return max(self.peak, single)


def scaled_populations(dataset, factor: float):
    """`dataset` with every cell's and register's population times `factor` (rounded): new
    data for the same areas, strata and registers, as a recalibration brings."""
    import dataclasses

    import numpy as np

    if factor == 1.0:
        return dataset
    cells, obs = dataset.cells.copy(), dataset.observations.copy()
    cells["population"] = np.round(cells["population"] * factor)
    obs["population"] = np.round(obs["population"] * factor)
    return dataclasses.replace(dataset, cells=cells, observations=obs)
