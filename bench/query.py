"""Benchmark posterior queries on synthetic joint draws at national-like size (no fit).

    .venv/bin/python bench/query.py                       # 1,000 areas x 80 strata x 1,000
    .venv/bin/python bench/query.py --areas 300 --draws 400 --repeats 5

Cells: areas in PCNs of ~7 and sub-ICBs of ~70, strata age band (8) x sex x ethnicity (5),
about 5% of cells empty and dropped, populations lognormal; an area IMD-like score (for
deciles). Draws: prevalence and detection with area effects and per-draw noise, recorded
near its register share, undiagnosed binomial among the unregistered, float32 like
`gapmodel.fit.derive` (pi and theta, which the queries never read, are not
materialised). Each operation runs once to warm up, then `--repeats` times; peak MB is
the largest traced allocation (tracemalloc) of one further run, above what was in use
before it. Machines are noisy: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.special import expit

from gapmodel.fit import CellDraws
from gapmodel.posterior import PosteriorView, equity, estimates, inequality, plan, top_n

AGES = ("18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85+")
ETHNICITIES = ("White", "Asian", "Black", "Mixed", "Other")


def synthetic(n_areas: int, n_draws: int, seed: int) -> PosteriorView:
    rng = np.random.default_rng(seed)
    strata = pd.MultiIndex.from_product([AGES, ("F", "M"), ETHNICITIES],
                                        names=["age_band", "sex", "ethnicity"]).to_frame(
        index=False)
    strata.insert(0, "stratum", strata.agg("|".join, axis=1))
    area = np.repeat(np.arange(n_areas), len(strata))
    cells = strata.iloc[np.tile(np.arange(len(strata)), n_areas)].reset_index(drop=True)
    cells.insert(0, "area", [f"A{a:05d}" for a in area])
    cells["pcn"] = [f"PCN{a // 7:04d}" for a in area]
    cells["sub_icb"] = [f"SUB{a // 70:03d}" for a in area]
    eth_share = np.array([0.8, 0.1, 0.04, 0.03, 0.03])  # of each age-sex group
    scale = len(ETHNICITIES) * eth_share[strata["ethnicity"].map(
        {e: i for i, e in enumerate(ETHNICITIES)}).to_numpy()]
    size = rng.lognormal(np.log(6000 / len(strata)), 0.8, len(cells)) \
        * np.tile(scale, n_areas)
    cells["population"] = np.maximum(np.round(size), 0).astype(np.int64)
    keep = (rng.random(len(cells)) > 0.05) & (cells["population"] > 0)
    cells, area = cells[keep].reset_index(drop=True), area[keep]
    n = cells["population"].to_numpy()
    age = cells["age_band"].map({a: i for i, a in enumerate(AGES)}).to_numpy()
    black = (cells["ethnicity"] == "Black").to_numpy()
    logit_pi = -3.5 + 0.45 * age + 0.3 * black + rng.normal(0, 0.1, n_areas)[area]
    logit_theta = 0.6 + 0.1 * age - 0.4 * black + rng.normal(0, 0.3, n_areas)[area]
    noise = rng.normal(0, 0.1, (n_draws, 1)).astype(np.float32)
    pi = expit(logit_pi + noise).astype(np.float32)
    theta = expit(logit_theta + noise[::-1]).astype(np.float32)
    recorded = np.round(n * expit(logit_pi) * expit(logit_theta)).astype(np.float32)
    recorded = np.broadcast_to(recorded, (n_draws, len(n))) \
        + rng.normal(0, 0.01, (n_draws, len(n))).astype(np.float32)
    q = pi * (1 - theta) / (1 - pi * theta)
    del pi, theta
    at_risk = np.clip(np.rint(n - recorded), 0, None).astype(np.int64)
    undiagnosed = rng.binomial(at_risk, q).astype(np.float32)
    del at_risk, q
    flat = np.broadcast_to(np.float32(0.5), recorded.shape)
    draws = CellDraws(expected=recorded + undiagnosed, recorded=recorded,
                      undiagnosed=undiagnosed, pi=flat, theta=flat)
    covariates = pd.DataFrame({"imd_score": rng.gamma(3.0, 7.0, n_areas)},
                              index=pd.Index([f"A{a:05d}" for a in range(n_areas)],
                                             name="area"))
    return PosteriorView(cells, draws, version="bench", levels=["area", "pcn", "sub_icb"],
                         attributes=["age_band", "sex", "ethnicity"], covariates=covariates)


def measure(call: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    call()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    ms = 1000 * np.array(times)
    return float(np.median(ms)), float(np.quantile(ms, 0.9)), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    view = synthetic(args.areas, args.draws, args.seed)
    built = time.perf_counter() - start
    print(f"{args.areas:,} areas, {view.cells['stratum'].nunique()} strata, "
          f"{len(view.cells):,} cells, {view.n_draws:,} draws "
          f"(synthetic draws and view built in {built:.1f} s)\n")
    black = "ethnicity == 'Black' and age_band in ['65-74', '75-84', '85+']"
    units = int(0.02 * view.population.sum())
    operations: dict[str, Callable[[], object]] = {
        "estimates: total": lambda: estimates(view),
        "estimates by area": lambda: estimates(view, by="area"),
        "estimates by pcn": lambda: estimates(view, by="pcn"),
        "estimates by pcn, filtered": lambda: estimates(view, by="pcn", where=black),
        "estimates by sub_icb x ethnicity": lambda: estimates(view,
                                                              by=["sub_icb", "ethnicity"]),
        "estimates by area x stratum (cells)": lambda: estimates(view,
                                                                 by=["area", "stratum"]),
        "top_n 20 areas": lambda: top_n(view, 20, level="area"),
        "plan: contacts, area units": lambda: plan(view, units),
        "plan: contacts, area x stratum units": lambda: plan(view, units,
                                                             unit="area_stratum"),
        "plan: 50 areas": lambda: plan(view, 50, capacity_unit="areas"),
        "plan: contacts, equity weights": lambda: plan(
            view, units, equity={"attribute": "ethnicity", "weights": {"Black": 2.0}}),
        "equity by ethnicity": lambda: equity(view, "ethnicity"),
        "inequality by imd_score_decile": lambda: inequality(view, "imd_score_decile"),
    }
    rows = []
    for name, call in operations.items():
        median, p90, peak = measure(call, args.repeats)
        rows.append((name, median, p90, peak))
    print("| operation | median ms | p90 ms | peak MB |")
    print("|---|---|---|---|")
    for name, median, p90, peak in rows:
        print(f"| {name} | {median:,.1f} | {p90:,.1f} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
