"""Literature benchmarks for the BYM2 area effect: the Scottish lip cancer data.

The classic Poisson disease-mapping benchmark (Clayton & Kaldor 1987),

    y_i ~ Poisson(E_i exp(beta0 + beta1 x_i + u_i)),   x_i = AFF_i / 10,

with u the product's BYM2 effect (`gapmodel.model.bym2_effect`, Riebler et al. 2016) on the
GeoBUGS adjacency graph, fitted with the priors of the published Stan/INLA comparison
(stan-dev/example-models, knitr/car-iar-poisson/stan_INLA_bym2.html) and compared with its
posterior summaries. The spec lives in models/benchmarks/scotland_lip_bym2.yaml; the data
are read at run time from the shared data directory (never copied into the project).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gapmodel.graph import Graph
from gapmodel.model import EIGEN_LIMIT, bym2_effect

ENV_VAR = "GAPMODEL_DATA_DIR"
SCOTLAND_OBSERVATIONS = "scotland_lip_cancer.csv"
SCOTLAND_ADJACENCY = {
    "connected": "scotland_lip_cancer_adjacency.csv",  # GeoBUGS: islands linked, 1 component
    "islands": "scotland_lip_cancer_adjacency_islands.csv",  # Stan 2021: 3 singletons
}


# -- spec ----------------------------------------------------------------------------------

class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normal(_Spec):
    mu: float = 0.0
    sigma: float = Field(gt=0)


class HalfNormal(_Spec):
    sigma: float = Field(gt=0)


class BetaPrior(_Spec):
    alpha: float = Field(gt=0)
    beta: float = Field(gt=0)


class Priors(_Spec):
    beta0: Normal
    beta1: Normal
    sigma: HalfNormal  # total sd of the BYM2 effect
    rho: BetaPrior  # share of the BYM2 variance that is spatially structured


class DataSpec(_Spec):
    observations: str = SCOTLAND_OBSERVATIONS
    adjacency: Literal["connected", "islands"] = "connected"
    covariate: str = "aff_pct"
    covariate_scale: float = Field(0.1, gt=0, description="x = covariate * scale")


class SamplerSpec(_Spec):
    name: Literal["nutpie"] = "nutpie"
    chains: int = Field(4, ge=2)
    tune: int = Field(1000, ge=100)
    draws: int = Field(2000, ge=100)
    target_accept: float = Field(0.9, gt=0, lt=1)
    seed: int = 1


class Source(_Spec):
    repo: str
    path: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    url: str | None = None
    note: str | None = None


class PublishedValue(_Spec):
    mean: float
    sd: float = Field(gt=0)
    mcse: float | None = Field(None, ge=0, description="Monte Carlo error, if reported")
    decimals: int = Field(2, ge=0, description="rounding of the published table")


class PublishedFit(_Spec):
    name: str
    method: str
    source: Source
    values: dict[str, PublishedValue]


class BenchmarkSpec(_Spec):
    name: str
    description: str = ""
    data: DataSpec = DataSpec()
    priors: Priors
    sampler: SamplerSpec = SamplerSpec()
    parametrisations: list[Literal["centered", "non_centered"]] = ["centered"]
    published: list[PublishedFit] = Field(min_length=1, description="first = reference")

    @model_validator(mode="after")
    def _known_quantities(self) -> BenchmarkSpec:
        for fit in self.published:
            unknown = set(fit.values) - set(QUANTITIES)
            if unknown:
                raise ValueError(f"published fit '{fit.name}' has unknown quantities "
                                 f"{sorted(unknown)} (known: {', '.join(QUANTITIES)})")
        return self

    @property
    def reference(self) -> PublishedFit:
        return self.published[0]


def load_spec(path: str | Path) -> BenchmarkSpec:
    with open(path, encoding="utf-8") as fh:
        return BenchmarkSpec.model_validate(yaml.safe_load(fh))


# -- data ----------------------------------------------------------------------------------

def resolve_data_dir(path: str | Path | None = None) -> Path:
    """The data directory: `path`, else $GAPMODEL_DATA_DIR, else ../shared/data."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class ScotlandData:
    names: list[str]  # district names, in district_id order 1..56
    observed: np.ndarray  # (56,) int
    expected: np.ndarray  # (56,) float
    aff_pct: np.ndarray  # (56,) % in agriculture, fishing, forestry
    graph: Graph
    adjacency: str  # "connected" or "islands"


def load_scotland(data_dir: str | Path, islands: bool = False,
                  observations: str = SCOTLAND_OBSERVATIONS) -> ScotlandData:
    """Scottish lip cancer counts and the GeoBUGS (connected) or Stan-2021 islands graph."""
    root = Path(data_dir)
    version = "islands" if islands else "connected"
    paths = {"observations": root / observations, "adjacency": root / SCOTLAND_ADJACENCY[version]}
    for what, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"Scotland {what} file not found: {path} (set "
                                    f"{ENV_VAR} or pass the data directory)")
    obs = pd.read_csv(paths["observations"])
    needed = {"district_id", "district_name", "observed", "expected", "aff_pct"}
    if missing := needed - set(obs.columns):
        raise ValueError(f"{paths['observations'].name} lacks columns {sorted(missing)}")
    obs = obs.sort_values("district_id").reset_index(drop=True)
    n = len(obs)
    if not np.array_equal(obs["district_id"].to_numpy(), np.arange(1, n + 1)):
        raise ValueError("district_id must be 1..N without gaps")
    adj = pd.read_csv(paths["adjacency"])
    if not {"node1", "node2"} <= set(adj.columns):
        raise ValueError(f"{paths['adjacency'].name} needs columns node1, node2")
    edges = adj[["node1", "node2"]].to_numpy(dtype=np.int64)
    if len(edges) and (edges.min() < 1 or edges.max() > n):
        raise ValueError(f"{paths['adjacency'].name}: node ids outside 1..{n}")
    expected = obs["expected"].to_numpy(dtype=float)
    if (expected <= 0).any():
        raise ValueError("expected counts must be positive")
    return ScotlandData(
        names=[str(s) for s in obs["district_name"]],
        observed=obs["observed"].to_numpy(dtype=np.int64), expected=expected,
        aff_pct=obs["aff_pct"].to_numpy(dtype=float),
        graph=Graph.from_edges(n, edges - 1), adjacency=version)


# -- model ---------------------------------------------------------------------------------

def scotland_bym2_model(data: ScotlandData, priors: Priors, *, centered: bool,
                        covariate_scale: float = 0.1, eigen_limit: int = EIGEN_LIMIT
                        ) -> pm.Model:
    """y ~ Poisson(E exp(beta0 + beta1 x + u)), u ~ BYM2 (gapmodel.model.bym2_effect;
    a centred BYM2's components above `eigen_limit` areas in sparse form)."""
    x = covariate_scale * data.aff_pct
    with pm.Model(coords={"area": data.names}) as model:
        beta0 = pm.Normal("beta0", priors.beta0.mu, priors.beta0.sigma)
        beta1 = pm.Normal("beta1", priors.beta1.mu, priors.beta1.sigma)
        u = bym2_effect(data.graph, sigma_prior=priors.sigma.sigma, centered=centered,
                        mean=beta0 + beta1 * x, rho_prior=(priors.rho.alpha, priors.rho.beta),
                        eigen_limit=eigen_limit)
        eta = np.log(data.expected) + u
        mu = pm.Deterministic("mu", pm.math.exp(eta), dims="area")
        pm.Poisson("y", mu=mu, observed=data.observed, dims="area")
    return model


#: Scalar quantities compared with the literature, computed from the posterior.
QUANTITIES: dict[str, Callable[[xr.Dataset], xr.DataArray]] = {
    "beta0": lambda p: p["beta0"],
    "beta1": lambda p: p["beta1"],
    "sigma": lambda p: p["sigma_u"],
    "rho": lambda p: p["rho_bym2"],
    "log_precision": lambda p: -2.0 * np.log(p["sigma_u"]),
    "logit_rho": lambda p: np.log(p["rho_bym2"]) - np.log1p(-p["rho_bym2"]),
    "mu_5": lambda p: p["mu"].isel(area=4),  # district 5 (ross-cromarty), fitted mean
}


def benchmark_quantities(posterior: xr.Dataset) -> xr.Dataset:
    return xr.Dataset({name: f(posterior).drop_vars("area", errors="ignore")
                       for name, f in QUANTITIES.items()})


def sample_benchmark(spec: BenchmarkSpec, data_dir: str | Path | None = None, *,
                     centered: bool = True, eigen_limit: int = EIGEN_LIMIT
                     ) -> tuple[xr.DataTree, float]:
    """Posterior draws for the spec and the sampling wall time in seconds (incl. compile)."""
    data = load_scotland(resolve_data_dir(data_dir), islands=spec.data.adjacency == "islands",
                         observations=spec.data.observations)
    if spec.data.covariate != "aff_pct":
        raise ValueError("the Scotland benchmark covariate is aff_pct")
    model = scotland_bym2_model(data, spec.priors, centered=centered,
                                covariate_scale=spec.data.covariate_scale,
                                eigen_limit=eigen_limit)
    s = spec.sampler
    start = time.perf_counter()
    with model:
        idata = pm.sample(s.draws, tune=s.tune, chains=s.chains, cores=min(s.chains, 2),
                          nuts_sampler=s.name, target_accept=s.target_accept,
                          random_seed=s.seed, progressbar=False,
                          compute_convergence_checks=False)
    return idata, time.perf_counter() - start


def fit_benchmark(spec_path: str | Path, data_dir: str | Path | None = None, *,
                  centered: bool | None = None, eigen_limit: int = EIGEN_LIMIT
                  ) -> pd.DataFrame:
    """Fit the benchmark spec; the ArviZ summary of the compared quantities.

    `centered` defaults to the spec's first parametrisation. The summary's `attrs` carry
    the diagnostics the comparison needs: divergences, max R-hat over every free
    variable (random effects included), wall time, and the parametrisation.
    """
    spec = load_spec(spec_path)
    if centered is None:
        centered = spec.parametrisations[0] == "centered"
    idata, seconds = sample_benchmark(spec, data_dir, centered=centered,
                                      eigen_limit=eigen_limit)
    posterior = idata.posterior.to_dataset()
    table = az.summary(benchmark_quantities(posterior), ci_prob=0.9, ci_kind="eti",
                       round_to="none")
    free = [v for v in posterior.data_vars if v != "mu"]
    rhat_all = az.rhat(posterior[free])
    stats = idata.sample_stats
    table.attrs.update(
        divergences=int(stats["diverging"].sum()),
        max_rhat_all=float(max(float(rhat_all[v].max()) for v in rhat_all.data_vars)),
        wall_seconds=seconds, centered=centered, spec=spec.name,
        draws=spec.sampler.chains * spec.sampler.draws)
    return table


# -- comparison ----------------------------------------------------------------------------

def compare_published(summary: pd.DataFrame, published: PublishedFit, *,
                      sd_fraction: float = 0.25, mcse_multiple: float = 3.0) -> pd.DataFrame:
    """Our posterior means against a published fit, one row per published quantity.

    Tolerance = sd_fraction * published sd (a shift small next to the posterior width,
    which also absorbs the unreported Monte Carlo error of a long published run)
    + mcse_multiple * sqrt(our mcse^2 + published mcse^2) (published mcse 0 when not
    reported) + half a unit in the last published decimal (the table's rounding).
    """
    rows = []
    for name, pub in published.values.items():
        ours = summary.loc[name]
        mc = float(np.hypot(ours["mcse_mean"], pub.mcse or 0.0))
        tol = sd_fraction * pub.sd + mcse_multiple * mc + 0.5 * 10.0 ** -pub.decimals
        diff = float(ours["mean"]) - pub.mean
        rows.append({"quantity": name, "published_mean": pub.mean, "published_sd": pub.sd,
                     "mean": float(ours["mean"]), "sd": float(ours["sd"]),
                     "mcse_mean": float(ours["mcse_mean"]), "diff": diff,
                     "diff_in_sd": diff / pub.sd, "tolerance": tol,
                     "ok": abs(diff) < tol})
    return pd.DataFrame(rows).set_index("quantity")
