"""Benchmark the BYM2 area effect at scale: the product's parametrisation against PyMC's
default NUTS, a straightforward hand-written model and Stan, on one simulated data set.

    .venv/bin/python bench/bym2.py --areas 1000 3000 10000 33000 \\
        --models product pymc handwritten stan --draws 1000 --parallel 1 --timeout 900
    .venv/bin/python bench/bym2.py --areas 300 --draws 100        # a quick look

Data: N points in the unit square (towns of Zipf-like sizes over a uniform background,
like population density), their Delaunay triangulation as the adjacency graph (mean
degree about 6, like England's LSOAs), with a small second component in a corner (an
island) and three isolated areas. Poisson counts y ~ Poisson(E exp(beta0 + beta1 x + u)),
E lognormal around 35, x standard normal, and u an exact draw of BYM2(sigma, rho) (see
`icar_draw`); the truth is known, so each row says whether the 90% intervals of beta1,
sigma and rho cover it. Priors are those of the Scotland lip cancer benchmark
(models/benchmarks/scotland_lip_bym2.yaml): the same in every model.

Models (rows):
  product      gapmodel.model.bym2_effect(centered=False): pairwise-difference ICAR with a
               hard sum-to-zero per component, mixed with unit normals; sampled by nutpie
               with its diagonal mass matrix (--adaptation low_rank: the low-rank one of the
               product's specs, which costs far more per gradient at these sizes).
  centred      the product's centred BYM2 (bym2_effect(centered=True), as the synthetic and
               sub-ICB specs use it): u sampled itself, in each component's dense Laplacian
               eigenbasis up to gapmodel.model.EIGEN_LIMIT areas and in sparse form above
               (gapmodel.shifted_laplacian; sigma then sampled relative to the scale the
               effects imply, gapmodel.model._sheared_sigma); nutpie.
  sparse       the centred BYM2 in sparse form at every size (eigen_limit=0); nutpie.
  pymc         the non-centred product model, PyMC's default NUTS.
  handwritten  what a user writes with PyMC's built-ins: pm.ICAR (dense N x N adjacency)
               per component and iid normals, both centred (sd sigma sqrt(rho / s) and
               sigma sqrt(1 - rho)), PyMC's default NUTS. pm.ICAR's log density leaves out
               the -(n - 1) log(sigma) normalising term, which a centred ICAR needs: it is
               added as a Potential (without it sigma's posterior is wrong). Skipped above
               5,000 areas: the dense adjacency needs N^2 memory.
  stan         Morris et al. (2019) BYM2 in Stan (bench/bym2.stan): pairwise differences,
               soft sum-to-zero per component, non-centred; rstan (bench/setup_stan.sh
               installs it), compiled afresh in every run. A note row when R or rstan is
               missing.

Every row: 2 chains on 2 cores, tune = draws (--tune sets PyMC's and nutpie's warm-up
on its own), target_accept (adapt_delta) 0.9, BLAS
single-threaded inside each chain as gapmodel.fit samples (--blas-threads 0 1 adds rows with
the library's default, a thread per core in every chain), only the hyperparameters stored
(the area effects' draws would cost N x 2 x draws x 8 bytes each).
Columns: wall s end to end (model build incl. scaling factors + compile + sampling),
compile s, min bulk ESS over beta0, beta1, sigma, rho (ArviZ, for every row alike) and
which, ESS per wall second, that ESS/s over Stan's at the same size, max R-hat over the
four, post-warm-up divergences, peak MB of the run's whole process tree (compilers
included), microseconds per gradient evaluation per area (the chains' own sampling time,
summed over chains, / their leapfrog steps incl. warm-up / N: PyMC's per-iteration
timings, Stan's elapsed times, nutpie's call time x 2 chains), and coverage. Then the
cost-per-area curve per model. Each run is its own process (`--one`); `--parallel N`
runs N at once (only where 2N cores are free).
Machines are noisy: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from common import ROOT, PeakMemory, add_blas_option, limit_blas, machine_line, min_ess, run_child
from scipy.sparse.linalg import splu
from scipy.spatial import Delaunay

from gapmodel.graph import Graph

HERE = Path(__file__).resolve().parent
SCOTLAND_SPEC = ROOT / "models" / "benchmarks" / "scotland_lip_bym2.yaml"
MODELS = ("product", "centred", "sparse", "pymc", "handwritten", "stan")
SAMPLER = {"product": "nutpie", "centred": "nutpie", "sparse": "nutpie", "pymc": "pymc",
           "handwritten": "pymc", "stan": "rstan"}
HYPER = ("beta0", "beta1", "sigma", "rho")
#: Variable names of the hyperparameters in each PyMC model.
NAMES = {"product": {"beta0": "beta0", "beta1": "beta1", "sigma": "sigma_u",
                     "rho": "rho_bym2"},
         "handwritten": {name: name for name in HYPER}}
NAMES["pymc"] = NAMES["centred"] = NAMES["sparse"] = NAMES["product"]
TRUTH = {"beta0": -0.1, "beta1": 0.25, "sigma": 0.4, "rho": 0.7}
COVERED = ("beta1", "sigma", "rho")
CHAINS = 2
TARGET_ACCEPT = 0.9
DENSE_LIMIT = 5000  # handwritten model: dense N x N adjacency above this is too big


# -- graph and data ------------------------------------------------------------------------

def lsoa_like_graph(n: int, seed: int = 0, islands: bool = True,
                    isolated: int = 3) -> tuple[Graph, np.ndarray]:
    """A planar adjacency graph over n areas and their points in the unit square.

    Delaunay triangulation of clustered points. With `islands`, the max(5, n // 300) points
    nearest the corner (1, 0) lose their edges to the rest (a second component) and
    `isolated` random other areas lose all theirs."""
    rng = np.random.default_rng(seed)
    points = _clustered_points(n, rng)
    simplices = Delaunay(points).simplices
    edges = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    if islands:
        island = np.zeros(n, dtype=bool)
        island[np.argsort(((points - [1.0, 0.0]) ** 2).sum(axis=1))[:max(5, n // 300)]] = True
        edges = edges[island[edges[:, 0]] == island[edges[:, 1]]]
        alone = rng.choice(np.flatnonzero(~island), size=isolated, replace=False)
        edges = edges[~np.isin(edges, alone).any(axis=1)]
    return Graph.from_edges(n, edges), points


def _clustered_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """60% of points in towns (Zipf-like sizes, sd 0.01-0.04), 40% uniform."""
    towns = max(3, n // 400)
    centres = rng.uniform(0.05, 0.95, size=(towns, 2))
    spread = rng.uniform(0.01, 0.04, size=towns)
    weight = 1.0 / np.arange(1, towns + 1)
    in_towns = int(0.6 * n)
    which = rng.choice(towns, size=in_towns, p=weight / weight.sum())
    points = np.concatenate([centres[which] + spread[which, None] * rng.normal(size=(in_towns, 2)),
                             rng.uniform(size=(n - in_towns, 2))])
    outside = ((points < 0) | (points > 1)).any(axis=1)
    points[outside] = rng.uniform(size=(outside.sum(), 2))
    return points


def icar_draw(graph: Graph, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """Exact draw(s) of the unit ICAR: phi ~ N(0, Q^+), Q = D - W the graph Laplacian,
    summing to zero on each component (0 on isolated areas).

    With B the (edges x areas) incidence matrix, Q = B'B, and for z ~ N(0, I_edges) the
    minimum-norm least-squares solution phi = B^+ z has covariance B^+ B^+' = (B'B)^+ =
    Q^+. It is computed through one sparse LU: pinning one area per component,
    A = Q + sum_k e_k e_k' is invertible, and A x = B'z forces x = 0 at the pinned areas
    (sum the equations over a component: the Q and B' parts vanish), so Q x = B'z; x
    minus its component means is then the minimum-norm solution B^+ z. No approximation.
    """
    n, m = graph.n, 1 if size is None else size
    e = len(graph.edges)
    incidence = sp.csr_matrix((np.tile([1.0, -1.0], e), (np.repeat(np.arange(e), 2),
                                                         graph.edges.ravel())), shape=(e, n))
    first = np.unique(graph.component, return_index=True)[1]
    pin = sp.csr_matrix((np.ones(len(first)), (first, first)), shape=(n, n))
    lu = splu((graph.laplacian() + pin).tocsc())
    x = lu.solve(np.asarray(incidence.T @ rng.standard_normal((e, m))))
    means = np.zeros((len(graph.sizes), m))
    np.add.at(means, graph.component, x)
    x -= (means / graph.sizes[:, None])[graph.component]
    return x[:, 0] if size is None else x.T


@dataclass(frozen=True)
class BenchData:
    graph: Graph
    expected: np.ndarray
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray  # the true BYM2 effect
    truth: dict


def simulate(n: int, seed: int = 0, islands: bool = True, truth: dict | None = None
             ) -> BenchData:
    """Poisson counts over the `lsoa_like_graph` with a known BYM2 effect."""
    truth = dict(TRUTH if truth is None else truth)
    graph, _ = lsoa_like_graph(n, seed, islands)
    rng = np.random.default_rng([seed, 1])
    expected = np.exp(rng.normal(np.log(35.0), 0.35, size=n))
    x = rng.standard_normal(n)
    phi = icar_draw(graph, rng)
    theta = rng.standard_normal(n)
    connected = ~graph.isolated
    scale = np.nan_to_num(graph.scaling_factors(), nan=1.0)
    rho = truth["rho"]
    mix = np.where(connected, np.sqrt(rho) * phi / np.sqrt(scale) + np.sqrt(1 - rho) * theta,
                   theta)
    u = truth["sigma"] * mix
    y = rng.poisson(expected * np.exp(truth["beta0"] + truth["beta1"] * x + u))
    return BenchData(graph=graph, expected=expected, x=x, y=y, u=u, truth=truth)


def priors():
    """The Scotland lip cancer benchmark's priors (gapmodel.benchmarks.Priors)."""
    from gapmodel.benchmarks import load_spec

    return load_spec(SCOTLAND_SPEC).priors


# -- models --------------------------------------------------------------------------------

def product_model(data: BenchData, which: str = "product"):
    """y ~ Poisson(E exp(beta0 + beta1 x + u)), u = the product's BYM2: non-centred
    ("product", "pymc") or centred ("centred": in the eigenbasis up to EIGEN_LIMIT areas
    per component, in sparse form above; "sparse": in sparse form at every size)."""
    import pymc as pm

    from gapmodel.model import EIGEN_LIMIT, bym2_effect

    p = priors()
    with pm.Model(coords={"area": np.arange(data.graph.n)}) as model:
        beta0 = pm.Normal("beta0", p.beta0.mu, p.beta0.sigma)
        beta1 = pm.Normal("beta1", p.beta1.mu, p.beta1.sigma)
        u = bym2_effect(data.graph, sigma_prior=p.sigma.sigma,
                        centered=which in ("centred", "sparse"), mean=beta0 + beta1 * data.x,
                        rho_prior=(p.rho.alpha, p.rho.beta),
                        eigen_limit=0 if which == "sparse" else EIGEN_LIMIT)
        eta = np.log(data.expected) + u
        pm.Poisson("y", mu=pm.math.exp(eta), observed=data.y, dims="area")
    return model


def handwritten_model(data: BenchData):
    """The same BYM2 as a user writes it with PyMC's built-ins: centred pm.ICAR (dense
    adjacency) per component plus centred iid normals."""
    import pymc as pm
    import pytensor.tensor as pt

    p, graph = priors(), data.graph
    scale = graph.scaling_factors()
    connected = ~graph.isolated
    with pm.Model() as model:
        beta0 = pm.Normal("beta0", p.beta0.mu, p.beta0.sigma)
        beta1 = pm.Normal("beta1", p.beta1.mu, p.beta1.sigma)
        sigma = pm.HalfNormal("sigma", p.sigma.sigma)
        rho = pm.Beta("rho", p.rho.alpha, p.rho.beta)
        theta = pm.Normal("theta", 0.0, pt.where(connected, sigma * pt.sqrt(1 - rho), sigma),
                          shape=graph.n)
        u = theta
        for label in np.flatnonzero(graph.sizes > 1):
            members = np.flatnonzero(graph.component == label)
            local = np.full(graph.n, -1)
            local[members] = np.arange(len(members))
            inside = graph.edges[np.isin(graph.edges[:, 0], members)]
            w = np.zeros((len(members), len(members)), dtype=np.int64)
            w[local[inside[:, 0]], local[inside[:, 1]]] = 1
            w += w.T
            tau = sigma * pt.sqrt(rho / scale[members[0]])
            phi = pm.ICAR(f"phi{label}", W=w, sigma=tau)
            # pm.ICAR's logp lacks the normalising -(n - 1) log(tau) of a centred ICAR
            pm.Potential(f"phi{label}_normaliser", -(len(members) - 1) * pt.log(tau))
            u = pt.inc_subtensor(u[members], phi)
        eta = np.log(data.expected) + beta0 + beta1 * data.x + u
        pm.Poisson("y", mu=pm.math.exp(eta), observed=data.y)
    return model


def stan_data(data: BenchData, scale: np.ndarray) -> dict:
    """Data for bench/bym2.stan (1-based indices; connected areas grouped by component)."""
    graph, p = data.graph, priors()
    labels = np.flatnonzero(graph.sizes > 1)
    conn = np.concatenate([np.flatnonzero(graph.component == k) for k in labels]
                          or [np.zeros(0, dtype=np.int64)])
    position = np.full(graph.n, -1)
    position[conn] = np.arange(len(conn))
    sizes = graph.sizes[labels]
    return {"N": graph.n, "N_conn": len(conn), "conn": (conn + 1).tolist(), "K": len(labels),
            "comp_start": (np.cumsum(sizes) - sizes + 1).tolist(), "comp_size": sizes.tolist(),
            "N_edges": len(graph.edges), "node1": (position[graph.edges[:, 0]] + 1).tolist(),
            "node2": (position[graph.edges[:, 1]] + 1).tolist(), "scale": scale[conn].tolist(),
            "y": data.y.tolist(), "E": data.expected.tolist(), "x": data.x.tolist(),
            "prior_beta0": [p.beta0.mu, p.beta0.sigma], "prior_beta1": [p.beta1.mu, p.beta1.sigma],
            "prior_sigma": p.sigma.sigma, "prior_rho": [p.rho.alpha, p.rho.beta]}


# -- one run -------------------------------------------------------------------------------

def run_one(areas: int, model: str, draws: int, seed: int, islands: bool,
            adaptation: str = "diag", blas: int = 1, maxdepth: int = 10,
            tune: int | None = None) -> dict:
    """Simulate, fit once in this process (and its children) and measure it; `blas`
    threads per chain (0: the library's default, one per core); `tune` warm-up steps per
    chain (default: `draws`; Stan's always `draws`)."""
    data = simulate(areas, seed, islands)
    with PeakMemory() as memory, limit_blas(blas):
        fit = _fit_stan(data, draws, seed) if model == "stan" else \
            _fit_pymc(model, data, draws, seed, adaptation, maxdepth,
                      draws if tune is None else tune)
    posterior, n = fit.pop("posterior"), data.graph.n
    least, worst = min_ess(posterior, list(HYPER))
    import arviz as az

    rhat, ess = az.rhat(posterior), az.ess(posterior)
    low, high = posterior.quantile(0.05, dim=("chain", "draw")), \
        posterior.quantile(0.95, dim=("chain", "draw"))
    graph = data.graph
    return {"areas": n, "model": model, "sampler": SAMPLER[model], "blas": blas, **fit,
            "min_ess": least, "worst": worst, "ess_per_s": least / fit["wall_s"],
            "max_rhat": max(float(rhat[v]) for v in HYPER),
            "us_per_grad_area": 1e6 * fit["chain_s"] / fit["grads"] / n,
            "covered": {v: bool(float(low[v]) <= data.truth[v] <= float(high[v]))
                        for v in COVERED},
            "means": {v: float(posterior[v].mean()) for v in HYPER},
            "ess": {v: float(ess[v]) for v in HYPER}, "draws": CHAINS * draws,
            "edges": len(graph.edges), "components": sorted(graph.sizes.tolist(), reverse=True),
            "peak_mb": memory.mb}


def _fit_pymc(which: str, data: BenchData, draws: int, seed: int,
              adaptation: str = "diag", maxdepth: int = 10, tune: int = 1000) -> dict:
    import pymc as pm

    names = NAMES[which]
    start = time.perf_counter()
    model = handwritten_model(data) if which == "handwritten" else product_model(data, which)
    build_s = time.perf_counter() - start
    if SAMPLER[which] == "nutpie":
        import nutpie

        compiled = nutpie.compile_pymc_model(model, var_names=list(names.values()))
        compile_s = time.perf_counter() - start - build_s
        t0 = time.perf_counter()
        idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=CHAINS, cores=CHAINS,
                              seed=seed, target_accept=TARGET_ACCEPT, progress_bar=False,
                              adaptation=adaptation, maxdepth=maxdepth)
    else:
        model.logp_dlogp_function()
        compile_s = time.perf_counter() - start - build_s
        t0 = time.perf_counter()
        with model:
            idata = pm.sample(draws=draws, tune=tune, chains=CHAINS, cores=CHAINS,
                              nuts_sampler="pymc", target_accept=TARGET_ACCEPT,
                              random_seed=seed, progressbar=False, var_names=list(names.values()),
                              discard_tuned_samples=False, compute_convergence_checks=False)
    end = time.perf_counter()
    stats, warmup = idata["sample_stats"], idata["warmup_sample_stats"]
    posterior = idata["posterior"].to_dataset()[list(names.values())]
    if "perf_counter_diff" in stats:  # PyMC: each iteration's own time, per chain
        chain_s = float(stats["perf_counter_diff"].sum() + warmup["perf_counter_diff"].sum())
    else:  # nutpie: chains run in parallel threads for the whole call
        chain_s = (end - t0) * CHAINS
    return {"posterior": posterior.rename({v: k for k, v in names.items() if v != k}),
            "wall_s": end - start, "build_s": build_s, "compile_s": compile_s,
            "sample_s": end - t0, "chain_s": chain_s,
            "divergences": int(stats["diverging"].sum()),
            "grads": int(stats["n_steps"].sum() + warmup["n_steps"].sum())}


def _fit_stan(data: BenchData, draws: int, seed: int) -> dict:
    import pandas as pd
    import xarray as xr

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        scale = data.graph.scaling_factors()  # part of the model build, as in the others
        (out / "data.json").write_text(json.dumps(stan_data(data, scale)))
        build_s = time.perf_counter() - start
        done = subprocess.run(["Rscript", str(HERE / "bym2_stan.R"), str(HERE / "bym2.stan"),
                               str(out / "data.json"), str(out), str(draws), str(seed),
                               str(TARGET_ACCEPT)], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit("rstan failed: " + " | ".join(done.stderr.strip().splitlines()[-3:]))
        draws_df = pd.read_csv(out / "draws.csv")
        stats = pd.read_csv(out / "stats.csv")
        times = json.loads((out / "times.json").read_text())
    chains = sorted(draws_df["chain"].unique())
    posterior = xr.Dataset({v: (("chain", "draw"), np.stack(
        [draws_df.loc[draws_df["chain"] == c, v].to_numpy() for c in chains])) for v in HYPER})
    return {"posterior": posterior, "wall_s": wall, "build_s": build_s,
            "compile_s": float(times["compile_s"]), "sample_s": float(times["sample_s"]),
            "chain_s": float(times["chain_s"]),
            "divergences": int(stats.loc[~stats["warmup"], "divergent"].sum()),
            "grads": int(stats["n_leapfrog"].sum())}


# -- driver --------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", nargs="+", type=int, default=[1000, 3000, 10000, 33000])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--draws", type=int, default=1000, help="tune and draws per chain")
    parser.add_argument("--tune", type=int, default=None,
                        help="PyMC and nutpie rows: warm-up steps per chain (default: --draws)")
    parser.add_argument("--seed", type=int, default=1, help="data and sampler seed")
    parser.add_argument("--no-islands", action="store_true",
                        help="one connected component, no isolated areas")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument("--adaptation", choices=("diag", "low_rank"), default="diag",
                        help="nutpie mass matrix for the product row")
    parser.add_argument("--maxdepth", type=int, default=10,
                        help="nutpie rows: the deepest tree (2^maxdepth - 1 gradients a draw)")
    add_blas_option(parser)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.areas[0], args.models[0], args.draws, args.seed,
                                 not args.no_islands, args.adaptation, args.blas_threads[0],
                                 args.maxdepth, args.tune)))
        return
    print(machine_line(args.parallel, args.draws, args.tune)
          + f"; nutpie adaptation {args.adaptation}, "
          f"maxdepth {args.maxdepth}", flush=True)
    runs = [(areas, model, blas) for areas in args.areas for model in args.models
            for blas in args.blas_threads]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        rows = list(pool.map(lambda run: _run(*run, args), runs))
    print()
    print(report(rows))


def _run(areas: int, model: str, blas: int, args: argparse.Namespace) -> dict:
    """One (areas, model, BLAS threads) fit in a fresh process; a row of the table."""
    label = {"areas": areas, "model": model, "sampler": SAMPLER[model], "blas": blas}
    if model == "handwritten" and areas > DENSE_LIMIT:
        row = {**label, "note": f"skipped: the dense adjacency needs N^2 memory "
                                f"({areas ** 2 * 8 / 2**30:.1f} GB as int64)"}
    elif model == "stan" and (missing := _stan_missing()):
        row = {**label, "note": missing}
    else:
        cmd = [sys.executable, __file__, "--one", "--areas", str(areas), "--models", model,
               "--draws", str(args.draws), "--seed", str(args.seed),
               "--adaptation", args.adaptation, "--blas-threads", str(blas),
               "--maxdepth", str(args.maxdepth)]
        if args.tune is not None:
            cmd += ["--tune", str(args.tune)]
        if args.no_islands:
            cmd.append("--no-islands")
        row = run_child(cmd, label, args.timeout, dict(os.environ))
    print("done:", _format(row), flush=True)
    return row


@functools.cache
def _stan_missing() -> str | None:
    if shutil.which("Rscript") is None:
        return "no Rscript (bench/setup_stan.sh installs R and rstan)"
    done = subprocess.run(["Rscript", "-e", "library(rstan); library(jsonlite)"],
                          capture_output=True, text=True)
    return "R lacks rstan or jsonlite (bench/setup_stan.sh)" if done.returncode else None


HEADER = (f"{'areas':>6} {'model':11} {'sampler':7} {'blas':>4} {'wall s':>8} {'compile s':>9} "
          f"{'min ESS':>7} {'worst':5} {'ESS/s':>7} {'x Stan':>6} {'R-hat':>5} {'div':>4} "
          f"{'peak MB':>7} {'us/grad/area':>12}  covered (beta1 sigma rho)")


def _format(row: dict, stan: float | None = None) -> str:
    blas = row.get("blas", 1)
    head = f"{row['areas']:6d} {row['model']:11} {row['sampler']:7} {blas or 'all':>4}"
    if "note" in row:
        return f"{head} {row['note']}"
    ratio = f"{row['ess_per_s'] / stan:6.2f}" if stan else f"{'-':>6}"
    covered = " ".join("yes" if row["covered"][v] else "NO" for v in COVERED)
    return (f"{head} {row['wall_s']:8.1f} {row['compile_s']:9.1f} {row['min_ess']:7.0f} "
            f"{row['worst']:5} {row['ess_per_s']:7.2f} {ratio} {row['max_rhat']:5.3f} "
            f"{row['divergences']:4d} {row['peak_mb']:7.0f} {row['us_per_grad_area']:12.3f}  "
            f"{covered}")


def report(rows: list[dict]) -> str:
    """The table, a graph line per size, the mixing of sigma and rho, and the cost-per-area
    curve per model."""
    stan = {r["areas"]: r["ess_per_s"] for r in rows if r["model"] == "stan" and "note" not in r}
    lines = [HEADER] + [_format(r, stan.get(r["areas"])) for r in rows]
    graphs = {r["areas"]: r for r in rows if "note" not in r}
    if graphs:
        lines += ["", "graphs:"]
        for areas, r in sorted(graphs.items()):
            comps = r["components"]
            lines.append(f"  {areas:6d} areas: {r['edges']} edges (mean degree "
                         f"{2 * r['edges'] / areas:.2f}), components of "
                         f"{', '.join(map(str, comps[:3]))}"
                         f"{f' and {comps.count(1)} isolated' if comps.count(1) else ''}")
    fitted = [r for r in rows if "note" not in r]
    if fitted:
        lines += ["", "mixing: bulk ESS of sigma and rho, and per 1,000 post-warm-up draws "
                      "(both chains); gate = min ESS >= 400 and R-hat <= 1.01 over all four",
                  f"  {'areas':>6} {'model':11} {'blas':>4} {'draws':>6} {'ESS sigma':>9} "
                  f"{'ESS rho':>8} "
                  f"{'sigma/1k':>8} {'rho/1k':>7}  gate"]
        for r in fitted:
            e, k = r["ess"], 1000 / r["draws"]
            gate = "yes" if r["min_ess"] >= 400 and r["max_rhat"] <= 1.01 else "no"
            lines.append(f"  {r['areas']:6d} {r['model']:11} {r.get('blas', 1) or 'all':>4} "
                         f"{r['draws']:6d} "
                         f"{e['sigma']:9.0f} {e['rho']:8.0f} {e['sigma'] * k:8.0f} "
                         f"{e['rho'] * k:7.0f}  {gate}")
    sizes = sorted({r["areas"] for r in rows})
    lines += ["", "cost per area (us per gradient evaluation per area):",
              f"  {'model':11} {'sampler':7} {'blas':>4} " + " ".join(f"{a:>9d}" for a in sizes)]
    for model, blas in dict.fromkeys((r["model"], r.get("blas", 1)) for r in rows):
        cost = {r["areas"]: r["us_per_grad_area"] for r in rows
                if (r["model"], r.get("blas", 1)) == (model, blas) and "note" not in r}
        lines.append(f"  {model:11} {SAMPLER[model]:7} {blas or 'all':>4} "
                     + " ".join(f"{cost[a]:9.3f}" if a in cost else f"{'-':>9}" for a in sizes))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
