"""Stand-ins for gapmodel.fit.fit that the API tests run in the fit worker process
(kept light: the worker imports this module by name)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import xarray as xr

from gapmodel.data import Dataset
from gapmodel.fit import CellDraws, FitResult, diagnose
from gapmodel.spec import ModelSpec


def fake_fit(dataset: Dataset, spec: ModelSpec, *, progress: bool = True,
             method: str = "nuts", passed: bool = True, start_from: Any = None) -> FitResult:
    """Hand-made draws for the dataset's cells and a gate verdict of `passed`."""
    rng = np.random.default_rng(spec.sampler.seed)
    n, n_draws = len(dataset.cells), spec.derived_draws
    pop = dataset.cells["population"].to_numpy(float)
    recorded = np.round(pop * 0.2)[None, :] + np.zeros((n_draws, n))
    undiagnosed = rng.binomial(np.maximum(pop - recorded, 0).astype(np.int64), 0.05)
    f32 = np.float32
    draws = CellDraws(expected=(recorded + undiagnosed).astype(f32),
                      recorded=recorded.astype(f32), undiagnosed=undiagnosed.astype(f32),
                      pi=np.full((n_draws, n), 0.3, f32), theta=np.full((n_draws, n), 0.7, f32))
    shape = (2, 50)
    idata = xr.DataTree.from_dict({
        "posterior": xr.Dataset({"gamma0": (("chain", "draw"), rng.normal(0, 1, shape))}),
        "sample_stats": xr.Dataset({
            "diverging": (("chain", "draw"), np.zeros(shape, bool)),
            "energy": (("chain", "draw"), rng.normal(0, 1, shape))})})
    table, gate = diagnose(idata, rng.normal(100, 5, shape), spec)
    gate = {**gate, "passed": passed, "failures": [] if passed else ["ess bulk 90 < 400"]}
    start = {"kind": "warm", "from": start_from[0]} if start_from else {"kind": "cold"}
    return FitResult(spec=spec, dataset_hash=dataset.hash, idata=idata, diagnostics=table,
                     gate=gate, draws=draws, timings={"sample": 0.0}, method=method,
                     start=start)


def failing_gate_fit(dataset: Dataset, spec: ModelSpec, **kwargs: Any) -> FitResult:
    return fake_fit(dataset, spec, passed=False, **kwargs)


def broken_fit(dataset: Dataset, spec: ModelSpec, **kwargs: Any) -> FitResult:
    raise FloatingPointError("the sampler diverged everywhere")


def slow_fit(dataset: Dataset, spec: ModelSpec, **kwargs: Any) -> FitResult:
    """A fit that runs long enough to be cancelled while it runs."""
    time.sleep(300)
    return fake_fit(dataset, spec, **kwargs)


def pausing_fit(dataset: Dataset, spec: ModelSpec, **kwargs: Any) -> FitResult:
    """A fit of a few seconds: long enough to cancel while it runs, short enough to wait
    out (a fit on a Dask worker runs on after a cancel)."""
    time.sleep(4)
    return fake_fit(dataset, spec, **kwargs)
