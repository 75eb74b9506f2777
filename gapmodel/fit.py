"""Fit a spec to a dataset: sample, diagnose with ArviZ, apply the convergence gate,
and derive cell-level draws (expected, recorded, undiagnosed, rates, yield)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import xarray as xr
from pytensor.compile.mode import Mode
from scipy import sparse
from threadpoolctl import threadpool_limits

from gapmodel.area_laplace import MAX_STEPS
from gapmodel.data import Dataset
from gapmodel.model import HYPERPARAMETERS, ModelData, build_model
from gapmodel.spec import ModelSpec, WarmStartSettings
from gapmodel.warmstart import WarmStart, WarmStartError, pathfinder_start, warm_start

log = logging.getLogger(__name__)

#: How much one Newton step more may move a Laplace-collapsed log density, at any posterior
#: draw, for the gate (`laplace_error`): a relative error of 0.1% in the density.
LAPLACE_ERROR_TOLERANCE = 1e-3

#: Derived cell quantities kept for serving, in this order.
DERIVED = ("expected", "recorded", "undiagnosed", "pi", "theta")


@dataclass(frozen=True)
class CellDraws:
    """Joint posterior draws per cell (draw x cell, float32) for aggregation."""

    expected: np.ndarray
    recorded: np.ndarray
    undiagnosed: np.ndarray
    pi: np.ndarray
    theta: np.ndarray

    @property
    def n_draws(self) -> int:
        return self.expected.shape[0]

    def yield_per_contact(self) -> np.ndarray:
        """Chance that a person not on the register has the condition undiagnosed."""
        return self.pi * (1 - self.theta) / (1 - self.pi * self.theta)


@dataclass
class FitResult:
    spec: ModelSpec
    dataset_hash: str
    idata: xr.DataTree
    diagnostics: pd.DataFrame
    gate: dict[str, Any]
    draws: CellDraws
    timings: dict[str, float] = field(default_factory=dict)
    method: str = "nuts"
    #: how the sampler started: {"kind": "warm", "from": version id}, {"kind": "pilot"}
    #: (warm from a short run of its own; "method": "pathfinder" from Pathfinder's
    #: approximation instead) or {"kind": "cold"}; with a "reason" where a
    #: warm start from an earlier version was asked for and not possible
    start: dict[str, str] = field(default_factory=lambda: {"kind": "cold"})

    @property
    def passed(self) -> bool:
        return bool(self.gate["passed"])


def sample(model: pm.Model, spec: ModelSpec, progress: bool = True,
           warm: WarmStart | None = None) -> xr.DataTree:
    """NUTS with the spec's sampler settings; from `warm` (an earlier posterior's mass
    matrix and last draws), PyMC's NUTS with the spec's warm-start settings. Each chain runs
    on its own core, so BLAS runs single-threaded inside it: OpenBLAS's own threads
    oversubscribe the cores (the centred BYM2's gradient at 1,000 areas costs 3 times as
    much; docs/performance.md)."""
    s = spec.sampler
    common = {"chains": s.chains, "cores": min(s.chains, 2), "random_seed": s.seed,
              "progressbar": progress, "var_names": _stored_names(model),
              "compute_convergence_checks": False}
    with model, threadpool_limits(limits=1, user_api="blas"):
        if warm is not None:
            settings = s.warm_start or WarmStartSettings()
            step = warm.nuts(model, settings.target_accept or s.target_accept,
                             settings.maxdepth)
            tune = settings.tune if warm.adapt_tune is None else warm.adapt_tune
            return pm.sample(draws=settings.draws, tune=tune, step=step,
                             initvals=warm.initvals(s.chains), **common)
        nuts = {"adaptation": s.adaptation} if s.adaptation != "diag" else {}
        if s.maxdepth is not None:
            nuts["maxdepth"] = s.maxdepth
        return pm.sample(draws=s.draws, tune=s.tune, nuts_sampler=s.name,
                         target_accept=s.target_accept, **common,
                         **({"nuts": nuts} if s.name == "nutpie" and nuts else {}))


def approximate(model: pm.Model, spec: ModelSpec, progress: bool = True) -> xr.DataTree:
    """Fast approximate posterior (ADVI): for exploration only, never promotable."""
    s = spec.sampler
    with model:
        approx = pm.fit(n=20_000, method="advi", random_seed=s.seed, progressbar=progress)
        return approx.sample(s.draws * s.chains, random_seed=s.seed)


def _stored_names(model: pm.Model) -> list[str]:
    """The free variables alone. The deterministics come after sampling, from the function
    that derives the cell quantities (`CellProbabilities`): PyMC's sampler would compile
    one of its own for them and evaluate it at every draw in its parent process, beside the
    chains (on England by PCN, with the Laplace modes' Newton steps: 12 s before the first
    draw from empty caches, and 225 s of sampling against 161)."""
    return [v.name for v in model.free_RVs]


def with_deterministics(idata: xr.DataTree, computed: xr.Dataset) -> xr.DataTree:
    """`idata` with the deterministics `_derive_all` computed added to its posterior
    (those it lacks: an approximate fit's draws carry their own)."""
    posterior = idata.posterior.to_dataset()
    missing = {n: computed[n] for n in computed.data_vars if n not in posterior}
    if missing:
        idata["posterior"] = xr.DataTree(posterior.assign(missing))
    return idata


def monitored(idata: xr.DataTree) -> list[str]:
    """The gate's parameters: hyperparameters, not unit normals or sampling coordinates
    (the sheared intercept is a combination of gamma0 and alpha, both monitored)."""
    names = list(idata.posterior.data_vars)
    return [n for n in names if any(n == h or n.startswith(h + "_") for h in HYPERPARAMETERS)
            and not n.startswith("z_") and not n.endswith("_sheared")]


def diagnose(idata: xr.DataTree, total_gap: np.ndarray, spec: ModelSpec
             ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """ArviZ summary of hyperparameters and the total gap, and the gate's verdict."""
    posterior = idata.posterior.to_dataset()[monitored(idata)].copy()
    posterior["total_undiagnosed"] = (("chain", "draw"), total_gap)
    table = az.summary(posterior, ci_prob=0.9, ci_kind="eti", round_to="none")
    medians = az.summary(posterior, kind="stats_median", ci_prob=0.9,
                         ci_kind="eti", round_to="none")["median"]
    table = table.rename(columns={"eti90_lb": "q5", "eti90_ub": "q95"})
    table.insert(3, "q50", medians.reindex(table.index))
    stats = idata.sample_stats
    divergences = int(stats["diverging"].sum()) if "diverging" in stats else 0
    bfmi = np.atleast_1d(az.bfmi(stats["energy"].to_numpy())) if "energy" in stats \
        else np.array([np.nan])  # approximate fits have no sampler statistics
    gate = spec.gate
    checks = {
        "rhat": float(table["r_hat"].max()),
        "ess_bulk": float(table["ess_bulk"].min()),
        "ess_tail": float(table["ess_tail"].min()),
        "divergences": divergences,
        "ebfmi": float(np.nanmin(bfmi)) if np.isfinite(bfmi).any() else float("nan"),
    }
    failures = []
    if "laplace_error" in idata.posterior:  # Laplace-collapsed area effects
        checks["laplace_error"] = float(idata.posterior["laplace_error"].max())
        if not checks["laplace_error"] <= LAPLACE_ERROR_TOLERANCE:
            failures.append(
                f"Laplace modes not converged: one Newton step more moves the log density "
                f"by up to {checks['laplace_error']:.1e} (more than "
                f"{LAPLACE_ERROR_TOLERANCE:.0e}): where the collapse is a graph, raise "
                f"detection.area.newton_steps; where it is compiled (exact area totals), "
                f"some area did not converge in {MAX_STEPS} steps")
    if not checks["rhat"] <= gate.rhat:
        failures.append(f"R-hat {checks['rhat']:.3f} > {gate.rhat}")
    for key in ("ess_bulk", "ess_tail"):
        if not checks[key] >= gate.ess:
            failures.append(f"{key.replace('_', ' ')} {checks[key]:.0f} < {gate.ess:.0f}")
    if checks["divergences"] > gate.divergences:
        failures.append(f"{divergences} divergent transitions")
    if not checks["ebfmi"] >= gate.ebfmi:
        failures.append(f"E-BFMI {checks['ebfmi']:.2f} < {gate.ebfmi}")
    worst = table["ess_bulk"].idxmin() if len(table) else None
    verdict = {"passed": not failures, "failures": failures, "checks": checks,
               "thresholds": gate.model_dump(), "worst_parameter": worst}
    return table, verdict


class CellProbabilities:
    """pi, theta (draw x cell) and rho (draw x area or None) at posterior draws, from one
    function compiled once per model (`pm.compute_deterministics` compiles on every call:
    7 to 12 s per batch of draws on England by PCN).

    Where the area effects were integrated out (Laplace), each draw's u is drawn from its
    approximate conditional posterior N(u*, u_sd^2) and theta is shifted accordingly.
    """

    def __init__(self, model: pm.Model, data: ModelData, deterministics: bool = False):
        self.data = data
        self.collapsed = "u_sd" in model.named_vars
        cells = (["pi", "theta"] + (["rho"] if "rho" in model.named_vars else [])
                 + (["u_sd"] if self.collapsed else []))
        #: with `deterministics`, every deterministic but the cells' pi and theta, which
        #: are never stored (`evaluate`)
        self.extra = [v.name for v in model.deterministics
                      if deterministics and v.name not in ("pi", "theta")]
        self.names = cells + [n for n in self.extra if n not in cells]
        self.inputs = [rv.name for rv in model.free_RVs]
        self._fn = model.compile_fn([model[n] for n in self.names], inputs=model.free_RVs,
                                    on_unused_input="ignore")

    def evaluate(self, posterior: xr.Dataset) -> dict[str, np.ndarray]:
        """Every quantity of `names` at each draw of `posterior` (draws first, chain by
        chain)."""
        values = {n: posterior[n].values.reshape(-1, *posterior[n].shape[2:])
                  for n in self.inputs}
        count = posterior.sizes["chain"] * posterior.sizes["draw"]
        rows = [self._fn({n: v[i] for n, v in values.items()}) for i in range(count)]
        return {n: np.stack([row[k] for row in rows]) for k, n in enumerate(self.names)}

    def __call__(self, posterior: xr.Dataset, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.cells(self.evaluate(posterior), rng)

    def cells(self, flat: dict[str, np.ndarray], rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """pi, theta and rho from `evaluate`'s values."""
        theta = flat["theta"]
        if self.collapsed:
            # expit(logit(theta) + shift) with the exponential taken per area, not per cell
            odds = np.exp(-rng.standard_normal(flat["u_sd"].shape) * flat["u_sd"])
            theta = theta / (theta + (1.0 - theta) * odds[:, self.data.cell_area])
        return flat["pi"], theta, flat.get("rho")


def summed_by(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Per row of `values` (a draw), its columns summed by `index` into `size` levels, as one
    sparse product (`np.add.at` does the same element by element)."""
    columns = len(index)
    matrix = sparse.csr_matrix((np.ones(columns), (index, np.arange(columns))),
                               shape=(size, columns))
    return np.ascontiguousarray((matrix @ values.T).T)


def derive(data: ModelData, pi: np.ndarray, theta: np.ndarray, rho: np.ndarray | None,
           rng: np.random.Generator, keep: np.ndarray | None = None
           ) -> tuple[CellDraws, np.ndarray]:
    """Cell draws given parameter draws: those of the draws `keep` (all where None), and the
    total undiagnosed of every draw.

    recorded: each observation's count (midpoint of its interval) shared over its cells in
    proportion to N pi theta w; cells no register observes get a predictive draw.
    undiagnosed: a predictive draw Binomial(N - recorded, q) with q = pi (1 - theta) /
    (1 - pi theta), the chance that a person not on the register has the condition; so
    intervals carry both parameter uncertainty and the cell's own binomial variation.
    expected (true cases) = recorded + undiagnosed.
    """
    n = data.population[None, :]
    found = n * pi * theta
    contribution = found[:, data.pair_cell]
    if rho is not None:
        contribution = contribution * data.pair_weights(rho)
    mu = summed_by(contribution, data.pair_obs, len(data.obs_lo))
    count_per_mu = (data.obs_lo + data.obs_hi) / 2.0 / np.maximum(mu, 1e-300)
    recorded = summed_by(contribution * count_per_mu[:, data.pair_obs], data.pair_cell,
                         data.n_cells)
    unobserved = np.ones(data.n_cells, dtype=bool)
    unobserved[data.pair_cell] = False
    if unobserved.any():
        recorded[:, unobserved] = rng.binomial(
            np.broadcast_to(data.population[unobserved], recorded[:, unobserved].shape)
            .astype(np.int64), pi[:, unobserved] * theta[:, unobserved])
    q = pi * (1 - theta) / (1 - pi * theta)
    at_risk = np.clip(np.rint(n - recorded), 0, None).astype(np.int64)
    undiagnosed = rng.binomial(at_risk, q)
    total = undiagnosed.sum(axis=1, dtype=np.float64)
    rows = slice(None) if keep is None else keep
    f32 = np.float32
    recorded, undiagnosed = recorded[rows], undiagnosed[rows]
    # float32 for the kept rows only (England: a tenth less time per chunk of draws)
    return CellDraws(expected=(recorded + undiagnosed).astype(f32),
                     recorded=recorded.astype(f32), undiagnosed=undiagnosed.astype(f32),
                     pi=pi[rows].astype(f32), theta=theta[rows].astype(f32)), total


def fit(dataset: Dataset, spec: ModelSpec, *, progress: bool = True,
        method: str = "nuts", start_from: tuple[str, xr.Dataset] | None = None
        ) -> FitResult:
    """Build, sample (or approximate), diagnose, gate and derive cell draws.

    `start_from` (an earlier version's id and posterior, for specs with warm-start settings)
    warm-starts the sampler (`gapmodel.warmstart`). Where there is none, or it does not
    match the model, a spec with a pilot warm-starts from a short run of its own, and
    other specs start cold; the result's `start` says which, and why."""
    timings: dict[str, float] = {}
    begin = time.perf_counter()
    model, data = build_model(dataset, spec)
    timings["build"] = time.perf_counter() - begin
    begin = time.perf_counter()
    if method == "nuts":
        warm, start = _warm_start_or_pilot(model, spec, start_from, progress)
        idata = sample(model, spec, progress, warm)
    else:
        start, idata = {"kind": "cold"}, approximate(model, spec, progress)
    timings["sample"] = time.perf_counter() - begin
    begin = time.perf_counter()
    total_gap, draws, computed = _derive_all(model, data, idata.posterior.to_dataset(),
                                             spec.derived_draws, spec.sampler.seed)
    idata = with_deterministics(idata, computed)
    table, gate = diagnose(idata, total_gap, spec)
    if method != "nuts":
        gate = {**gate, "passed": False,
                "failures": ["approximate fit (ADVI): exploration only, never promotable"]}
    timings["derive"] = time.perf_counter() - begin
    return FitResult(spec=spec, dataset_hash=dataset.hash, idata=idata, diagnostics=table,
                     gate=gate, draws=draws, timings=timings, method=method, start=start)


def precompile(dataset: Dataset, spec: ModelSpec) -> dict[str, float]:
    """Compile what a fit of `spec` on `dataset` compiles, without sampling: the log density
    and gradient of the samplers that spec's fits use (PyMC's NUTS where it warm-starts,
    nutpie's where a first fit or its pilot is a nutpie run) and the derive step's
    function.
    Where the compile cache is kept (`gapmodel.compile_cache`), a later fit of the same data
    finds them compiled, and one of new data for the same layout finds their operations
    compiled (England by PCN: 50 s from empty caches, 13 s then). Seconds per part."""
    timings: dict[str, float] = {}
    begin = time.perf_counter()
    model, data = build_model(dataset, spec)
    point = model.initial_point()
    timings["build"] = time.perf_counter() - begin
    s = spec.sampler
    if s.warm_start is not None:
        begin = time.perf_counter()
        function = model.logp_dlogp_function(model.value_vars, ravel_inputs=True)
        function.set_extra_values({})
        function(np.concatenate([np.ravel(point[v.name]) for v in model.value_vars]))
        timings["log density and gradient"] = time.perf_counter() - begin
    if s.name == "nutpie" and (s.warm_start is None or s.pilot is None
                               or s.pilot.method != "pathfinder"):
        import nutpie

        begin = time.perf_counter()
        nutpie.compile_pymc_model(model, var_names=_stored_names(model), backend="numba")
        timings["nutpie's log density and gradient"] = time.perf_counter() - begin
    begin = time.perf_counter()
    probabilities = CellProbabilities(model, data, deterministics=True)
    constrained = pytensor.function(  # the free variables at the initial point, op by op
        model.value_vars, model.replace_rvs_by_values(model.free_RVs),
        mode=Mode(linker="py", optimizer="fast_compile"), on_unused_input="ignore")
    values = constrained(*[point[v.name] for v in model.value_vars])
    probabilities._fn({rv.name: v for rv, v in zip(model.free_RVs, values, strict=True)})
    timings["derive step"] = time.perf_counter() - begin
    return timings


def _warm_start_or_pilot(model: pm.Model, spec: ModelSpec,
                         start_from: tuple[str, xr.Dataset] | None, progress: bool
                         ) -> tuple[WarmStart | None, dict[str, str]]:
    """Where the spec warm-starts: from `start_from` if it matches the model, else from
    a pilot run where the spec has one, else nothing (a cold start); and how it started."""
    s = spec.sampler
    if s.warm_start is None:
        return None, {"kind": "cold"}
    note = {}
    if start_from is not None:
        try:
            warm = warm_start(model, start_from[1], start_from[0])
            return warm, {"kind": "warm", "from": warm.source}
        except WarmStartError as exc:
            note = {"reason": f"no warm start from {start_from[0]}: {exc}"}
            log.warning(note["reason"])
    if s.pilot is None:
        return None, {"kind": "cold", **note}
    if s.pilot.method == "pathfinder":
        return (pathfinder_start(model, s.chains, s.seed, s.pilot.tune),
                {"kind": "pilot", "method": "pathfinder", **note})
    lengths = {"tune": s.pilot.tune, "draws": s.pilot.draws,
               "maxdepth": s.pilot.maxdepth or s.maxdepth}
    pilot = sample(model, spec.model_copy(update={"sampler": s.model_copy(update=lengths)}),
                   progress)
    return warm_start(model, pilot.posterior.to_dataset(), "pilot"), {"kind": "pilot", **note}


def _derive_all(model: pm.Model, data: ModelData, posterior: xr.Dataset, keep: int,
                seed: int, chunk: int = 25, workers: int = 2
                ) -> tuple[np.ndarray, CellDraws, xr.Dataset]:
    """Total undiagnosed for every draw (chain x draw), cell draws for `keep` evenly
    thinned draws, and the model's deterministics at every draw (`with_deterministics`),
    computed chunk by chunk so memory stays bounded. Chunks of 25 draws keep each
    temporary within the processor's cache (England's 15,732 cells: 3 MB); chunks of 200
    took a third longer.

    `workers` threads take chunks in turn: the compiled function runs for one chunk at a
    time (it is not safe to call from two threads), while numpy's and scipy's work on the
    others, which releases the interpreter's lock, runs beside it. Each chunk draws from
    its own generator, seeded by `seed` and the chunk's place, so the draws do not depend
    on which thread took which chunk."""
    chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    total = np.zeros((chains, n_draws))
    flat_keep = np.unique(np.linspace(0, chains * n_draws - 1,
                                      min(keep, chains * n_draws)).round().astype(int))
    kept = {name: np.empty((len(flat_keep), data.n_cells), dtype=np.float32)
            for name in DERIVED}
    probabilities = CellProbabilities(model, data, deterministics=True)
    compiled = threading.Lock()

    def derive_chunk(task: tuple[int, tuple[int, int]]) -> dict[str, np.ndarray]:
        place, (c, start) = task
        piece = posterior.isel(chain=[c], draw=slice(start, start + chunk))
        with compiled:
            flat = probabilities.evaluate(piece)
        size = piece.sizes["draw"]
        first = c * n_draws + start
        rows = flat_keep[(flat_keep >= first) & (flat_keep < first + size)] - first
        rng = np.random.default_rng([seed, place])
        cells, total[c, start:start + size] = derive(
            data, *probabilities.cells(flat, rng), rng=rng, keep=rows)
        offset = int(np.searchsorted(flat_keep, first))
        for name in DERIVED:  # filled in place: one copy of the kept draws in memory
            kept[name][offset:offset + len(rows)] = getattr(cells, name)
        return {name: flat[name] for name in probabilities.extra}

    starts = [(c, start) for c in range(chains) for start in range(0, n_draws, chunk)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pieces = list(pool.map(derive_chunk, enumerate(starts)))  # in the chunks' order
    extra = {name: [piece[name] for piece in pieces] for name in probabilities.extra}
    return total, CellDraws(**kept), _draws_dataset(model, posterior, extra)


def _draws_dataset(model: pm.Model, posterior: xr.Dataset,
                   values: dict[str, list[np.ndarray]]) -> xr.Dataset:
    """Per-draw values (chunks of draws, chain by chain) as a dataset on `posterior`'s
    chains and draws, with the model's dims and coordinates (or `name_dim_i`, as ArviZ)."""
    chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    out = {}
    for name, chunks in values.items():
        array = np.concatenate(chunks).reshape(chains, n_draws, *chunks[0].shape[1:])
        dims = list(model.named_vars_to_dims.get(name) or [])
        dims += [f"{name}_dim_{i}" for i in range(len(dims), array.ndim - 2)]
        coords = {d: list(model.coords[d]) for d in dims if model.coords.get(d) is not None}
        out[name] = xr.DataArray(array, dims=("chain", "draw", *dims), coords=coords)
    return xr.Dataset(out, coords={"chain": posterior["chain"], "draw": posterior["draw"]})
