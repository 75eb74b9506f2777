"""Benchmark the HTTP service: a real uvicorn process over a synthetic version, driven by
concurrent clients (httpx, asyncio).

    .venv/bin/python bench/api.py                          # 500 areas x 24 strata x 1,000
    .venv/bin/python bench/api.py --areas 1000 --requests 400 --concurrency 16

The version is hand-made (no fit): areas in PCNs of ~8, strata age band (2) x sex x
ethnicity (3) x deprivation (2), joint float32 draws shaped like `gapmodel.fit.derive`'s,
saved through the registry (hashes verified at load). Each operation is requested
`--requests` times by `--concurrency` clients with an analyst key (no disclosure
control) after a warm-up; latency is per request as the client sees it, throughput is
requests over the wall time of the batch. Server and clients share the machine: compare
rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
from scipy.special import expit

from gapmodel.fit import CellDraws, FitResult
from gapmodel.registry import Registry
from gapmodel.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench_api"


def synthetic_version(root: Path, n_areas: int, n_draws: int, seed: int = 1) -> str:
    """Save and promote a synthetic version; returns its id."""
    rng = np.random.default_rng(seed)
    areas = pd.DataFrame({"area": [f"A{i:05d}" for i in range(n_areas)],
                          "pcn": [f"N{i // 8:04d}" for i in range(n_areas)],
                          "icb": [f"I{i // 200:02d}" for i in range(n_areas)]})
    strata = pd.MultiIndex.from_product(
        [("40-59", "60+"), ("F", "M"), ("White", "Asian", "Black"), ("1", "5")],
        names=["age_band", "sex", "ethnicity", "imd_quintile"]).to_frame(index=False)
    strata.insert(0, "stratum", strata.agg("|".join, axis=1))
    cells = areas.merge(strata, how="cross")
    n = len(cells)
    cells.insert(2, "population", rng.integers(20, 600, n))
    cells = cells[["area", "stratum", "population", "age_band", "sex", "ethnicity",
                   "imd_quintile", "pcn", "icb"]]
    area = pd.factorize(cells["area"])[0]
    pop = cells["population"].to_numpy(float)
    pi = expit(rng.normal(-1.3, 0.3, n)[None, :] + rng.normal(0, 0.05, (n_draws, 1)))
    theta = expit(0.6 + rng.normal(0, 0.4, n_areas)[area][None, :]
                  + rng.normal(0, 0.08, (n_draws, n)))
    recorded = np.round(pop * expit(-1.3) * expit(0.6))[None, :] + np.zeros((n_draws, 1))
    q = pi * (1 - theta) / (1 - pi * theta)
    undiagnosed = rng.binomial(np.clip(pop - recorded, 0, None).astype(np.int64), q)
    f32 = np.float32
    draws = CellDraws(expected=(recorded + undiagnosed).astype(f32),
                      recorded=recorded.astype(f32), undiagnosed=undiagnosed.astype(f32),
                      pi=pi.astype(f32), theta=theta.astype(f32))
    spec = ModelSpec.model_validate({"name": MODEL, "derived_draws": n_draws,
                                     "data": {"kind": "directory", "path": "unused"}})
    gate = {"passed": True, "failures": [], "checks": {}, "thresholds": {}}
    result = FitResult(spec=spec, dataset_hash="0" * 64, idata=None,
                       diagnostics=pd.DataFrame({"mean": [0.0]}, index=["gamma0"]),
                       gate=gate, draws=draws)
    summary = {"levels": {"practice": n_areas, "pcn": areas["pcn"].nunique(),
                          "icb": areas["icb"].nunique()},
               "attributes": {c: sorted(strata[c].unique()) for c in strata.columns[1:]}}
    dataset = SimpleNamespace(cells=cells, hash="0" * 64, name="bench",
                              covariates=pd.DataFrame(index=pd.Index(areas["area"])),
                              summary=lambda: {"name": "bench", **summary})
    store = Registry(root)
    version = store.save(result, dataset, save_posterior=False)
    store.promote(version)
    return version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def drive(base: str, key: str, make: callable, requests: int,
                concurrency: int) -> tuple[np.ndarray, float, int]:
    """Latencies (s), wall time (s) and error count of `requests` requests."""
    latencies: list[float] = []
    errors = 0
    queue = list(range(requests))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=120,
                                 limits=limits) as client:
        async def worker() -> None:
            nonlocal errors
            while queue:
                queue.pop()
                method, path, kwargs = make()
                start = time.perf_counter()
                response = await client.request(method, path, **kwargs)
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return np.array(latencies), wall, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn processes")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gapmodel-bench-api-"))
    started = time.perf_counter()
    synthetic_version(tmp / "registry", args.areas, args.draws)
    print(f"synthetic version: {args.areas} areas x 24 strata x {args.draws} draws "
          f"(saved in {time.perf_counter() - started:.1f} s)")
    url = f"sqlite:///{tmp / 'api.db'}"
    # this script is bench/api.py: keep its folder from shadowing the `api` package
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from api.db import Database

    key = Database(url).create_key("analyst", "bench")[1]
    port = free_port()
    env = {**os.environ, "GAPMODEL_REGISTRY": str(tmp / "registry"), "DATABASE_URL": url,
           "GAPMODEL_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "gapmodel", "serve", "--port",
                               str(port), "--workers", str(args.workers), "--log-level",
                               "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.5)
        areas = [f"A{i:05d}" for i in range(args.areas)]
        rng = random.Random(1)
        operations = {
            "estimates by PCN": lambda: ("GET", f"/v1/models/{MODEL}/estimates",
                                         {"params": {"level": "pcn"}}),
            "estimates by area, filtered": lambda: (
                "GET", f"/v1/models/{MODEL}/estimates",
                {"params": {"level": "area", "where": "ethnicity == 'Black'",
                            "page_size": 1000}}),
            "aggregate of 20 areas": lambda: ("POST", f"/v1/models/{MODEL}/aggregate",
                                              {"json": {"areas": rng.sample(areas, 20)}}),
            "targets, 5,000 contacts": lambda: ("POST", f"/v1/models/{MODEL}/targets",
                                                {"json": {"capacity": 5000}}),
        }
        print(f"{args.requests} requests per operation, {args.concurrency} concurrent "
              f"clients, {args.workers} uvicorn worker(s)\n")
        print("| operation | p50 ms | p99 ms | requests/s | errors |")
        print("|---|---|---|---|---|")
        for name, make in operations.items():
            asyncio.run(drive(base, key, make, min(10, args.requests), 2))  # warm-up
            latencies, wall, errors = asyncio.run(drive(base, key, make, args.requests,
                                                        args.concurrency))
            p50, p99 = np.percentile(latencies * 1000, [50, 99])
            print(f"| {name} | {p50:,.1f} | {p99:,.1f} | {len(latencies) / wall:,.1f} | "
                  f"{errors} |")
    finally:
        server.terminate()
        server.wait(timeout=60)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
