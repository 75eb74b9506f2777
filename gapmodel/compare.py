"""Model comparison and predictive checks of the register observations.

The model adds the registers' likelihood as one potential (a sum), so ArviZ cannot see its
pointwise terms. `log_likelihood` rebuilds the model, writes the same terms as a vector,
compiles it once and evaluates it for every posterior draw, giving the `log_likelihood`
group that `az.loo` and `az.compare` need:

* one term per register observation (`log P(lo_o <= R_o <= hi_o)`, binomial or
  beta-binomial, exactly as in the model; observations over an empty population add
  nothing and are left out);
* with Laplace-collapsed area effects (`detection.area.collapse`), one term per area: its
  registers' likelihood with the area effect integrated out (the Laplace approximation the
  model itself uses), so LOO then leaves out one area at a time.

The terms sum to the model's `register` potential, draw by draw. Models can be compared
only on the same observations: the same dataset, both collapsed or neither.

`predictive_check` draws register counts from the posterior predictive distribution and
reports, per observation, where the observed count falls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from gapmodel import model as model_module
from gapmodel.data import Dataset
from gapmodel.fit import CellProbabilities, summed_by
from gapmodel.likelihood import binomial_logpmf, interval_logp
from gapmodel.model import ModelData, build_model
from gapmodel.spec import ModelSpec

#: Name of the pointwise variable in the `log_likelihood` group.
VAR_NAME = "register"
#: Name of the pointwise deterministic in the rebuilt model (`register` is the potential).
POINTWISE = "register_pointwise"
PROB = 0.9

_capture_lock = threading.Lock()


@contextmanager
def _capturing_laplace() -> Iterator[dict[str, Any]]:
    """While building a model, keep the prior mean and sd that `laplace_collapse` receives
    (the per-area Laplace terms need them; the model does not store them)."""
    captured: dict[str, Any] = {}
    original = model_module.laplace_collapse

    def wrapper(loglik, mean, sigma, start, *args, **kwargs):
        captured.update(mean=mean, sigma=sigma)
        return original(loglik, mean, sigma, start, *args, **kwargs)

    with _capture_lock:
        model_module.laplace_collapse = wrapper
        try:
            yield captured
        finally:
            model_module.laplace_collapse = original


def _concentration(model: pm.Model, spec: ModelSpec) -> pt.TensorVariable | None:
    if spec.likelihood.family != "beta_binomial":
        return None
    if "log_concentration" in model.named_vars:
        return pt.exp(model["log_concentration"])
    return pt.exp(pt.as_tensor(spec.likelihood.concentration.mu))


def _expected_counts(model: pm.Model, data: ModelData) -> pt.TensorVariable:
    """Per observation, sum over its cells of N pi theta w (w: recording completeness)."""
    pi, theta = model["pi"], model["theta"]
    weight = pt.ones(len(data.pair_obs))
    if "rho" in model.named_vars and data.uses_completeness:
        rho_pair = model["rho"][data.cell_area[data.pair_cell]]
        weight = pt.switch(pt.eq(data.pair_kind, 1), rho_pair,
                           pt.switch(pt.eq(data.pair_kind, 2), 1 - rho_pair, 1.0))
    recorded = data.population * pi * theta
    return pt.inc_subtensor(pt.zeros(len(data.obs_lo))[data.pair_obs],
                            recorded[data.pair_cell] * weight)


def _observation_terms(model: pm.Model, data: ModelData, spec: ModelSpec
                       ) -> tuple[pt.TensorVariable, np.ndarray]:
    """Log-likelihood of each live register observation (population > 0), and their
    positions among the dataset's observations."""
    live = np.flatnonzero(data.obs_population > 0)
    n = data.obs_population[live]
    mu = _expected_counts(model, data)
    p = pt.clip(mu[live] / n, 1e-12, 1 - 1e-9)
    lo, hi = data.obs_lo[live], data.obs_hi[live]
    concentration = _concentration(model, spec)
    if (lo == hi).all() and concentration is None:
        return binomial_logpmf(lo.astype(float), n, p), live
    return interval_logp(lo, hi, n, p, concentration), live


def _area_terms(model: pm.Model, data: ModelData, spec: ModelSpec, mean, sigma
                ) -> tuple[pt.TensorVariable, np.ndarray]:
    """Per area with observations, the Laplace log marginal of its registers: the terms of
    `laplace_collapse`'s potential, area by area."""
    terms, live = _observation_terms(model, data, spec)
    obs_area = np.zeros(len(data.obs_lo), dtype=int)
    obs_area[data.pair_obs] = data.cell_area[data.pair_cell]
    n_areas = len(data.areas)
    by_area = pt.inc_subtensor(pt.zeros(n_areas)[obs_area[live]], terms)
    u, u_sd = model["u"], model["u_sd"]
    prior = pm.logp(pm.Normal.dist(mean, sigma), u)
    marginal = by_area + prior + 0.5 * np.log(2 * np.pi) + pt.log(u_sd)
    observed = np.unique(obs_area[live])
    return marginal[observed], observed


@dataclass(frozen=True)
class PointwiseModel:
    """A rebuilt model with its pointwise register log-likelihood as a deterministic."""

    model: pm.Model
    data: ModelData
    unit: str
    """'observation' or 'area' (Laplace-collapsed area effects)."""
    labels: np.ndarray


def pointwise_model(dataset: Dataset, spec: ModelSpec) -> PointwiseModel:
    """Rebuild the spec's model and add the pointwise log-likelihood (`POINTWISE`)."""
    with _capturing_laplace() as captured:
        model, data = build_model(dataset, spec)
    with model:
        if spec.detection.area.collapse:
            terms, index = _area_terms(model, data, spec, captured["mean"], captured["sigma"])
            unit, labels = "area", np.asarray(data.areas, dtype=object)[index]
        else:
            terms, index = _observation_terms(model, data, spec)
            unit, labels = "observation", index
        model.add_coord(f"{VAR_NAME}_{unit}", labels)
        pm.Deterministic(POINTWISE, terms, dims=f"{VAR_NAME}_{unit}")
    return PointwiseModel(model=model, data=data, unit=unit, labels=labels)


def log_likelihood(idata: xr.DataTree, dataset: Dataset, spec: ModelSpec) -> xr.Dataset:
    """The pointwise register log-likelihood (chain, draw, unit) for every posterior draw,
    in float64 (2,000 draws of 35,000 observations take 560 MB)."""
    built = pointwise_model(dataset, spec)
    posterior = idata.posterior.to_dataset() if isinstance(idata, xr.DataTree) else idata
    out = pm.compute_deterministics(posterior, var_names=[POINTWISE], model=built.model,
                                    progressbar=False)
    return out[[POINTWISE]].rename({POINTWISE: VAR_NAME})


def add_log_likelihood(idata: xr.DataTree, dataset: Dataset, spec: ModelSpec
                       ) -> xr.DataTree:
    """`idata` with its `log_likelihood` group set (replaced if present), in place and
    returned, so that `az.loo(idata)` works."""
    idata["log_likelihood"] = xr.DataTree(log_likelihood(idata, dataset, spec))
    return idata


def loo(idata: xr.DataTree, **kwargs: Any):
    """PSIS-LOO of the register log-likelihood (`az.loo`); needs `add_log_likelihood`."""
    _require_log_likelihood(idata)
    return az.loo(idata, var_name=VAR_NAME, **kwargs)


def compare(fits: Mapping[str, xr.DataTree], **kwargs: Any) -> pd.DataFrame:
    """`az.compare` of fits on the same register observations; each needs its
    `log_likelihood` group. Refuses fits whose pointwise units differ."""
    shapes = {}
    for name, tree in fits.items():
        _require_log_likelihood(tree)
        ll = tree["log_likelihood"][VAR_NAME]
        unit = next(d for d in ll.dims if d not in ("chain", "draw"))
        shapes[name] = (unit, tuple(np.asarray(ll[unit].values).tolist()))
    if len(set(shapes.values())) > 1:
        raise ValueError("fits can be compared only on the same register observations "
                         "(same dataset; Laplace-collapsed area effects in all or none): "
                         + ", ".join(f"{k}: {len(v[1])} by {v[0]}" for k, v in shapes.items()))
    return az.compare(dict(fits), var_name=VAR_NAME, **kwargs)


def _require_log_likelihood(tree: xr.DataTree) -> None:
    if "log_likelihood" not in tree.children or VAR_NAME not in tree["log_likelihood"]:
        raise ValueError("no pointwise register log-likelihood: call add_log_likelihood first")


# -- posterior predictive check ----------------------------------------------------------------

@dataclass(frozen=True)
class RegisterCheck:
    """Observed register counts against posterior predictive draws, per observation."""

    table: pd.DataFrame
    """per live observation: register, area, population, lo, hi (the observed interval;
    equal for an exact count), predictive lower/median/upper, percentile (share of draws
    below the observed count's midpoint, ties counted half), inside (the observed interval
    meets the predictive interval)."""
    draws: np.ndarray
    """predictive counts (draw x live observation)."""
    prob: float

    @property
    def coverage(self) -> float:
        """Share of observations inside their predictive interval (near `prob` when the
        model describes the registers' variation well; far above: over-dispersed
        predictions; far below: registers vary more than the model allows)."""
        return float(self.table["inside"].mean()) if len(self.table) else float("nan")

    def summary(self) -> dict[str, float]:
        return {"observations": len(self.table), "prob": self.prob, "coverage": self.coverage,
                "percentile_mean": float(self.table["percentile"].mean())}


def predictive_check(idata: xr.DataTree, dataset: Dataset, spec: ModelSpec, *,
                     prob: float = PROB, max_draws: int = 500, seed: int = 0,
                     chunk: int = 250) -> RegisterCheck:
    """Predictive register counts R_o ~ (Beta-)Binomial(N_o, mu_o / N_o) for up to
    `max_draws` evenly thinned posterior draws, with mu_o from the draw's pi, theta and
    recording completeness (collapsed area effects drawn from their conditional posterior,
    as for the derived cell draws)."""
    model, data = build_model(dataset, spec)
    posterior = idata.posterior.to_dataset()
    chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    keep = np.unique(np.linspace(0, chains * n_draws - 1,
                                 min(max_draws, chains * n_draws)).round().astype(int))
    rng = np.random.default_rng(seed)
    probabilities = CellProbabilities(model, data)
    live = np.flatnonzero(data.obs_population > 0)
    n = np.rint(data.obs_population[live]).astype(np.int64)
    pieces = []
    for c in range(chains):
        rows = keep[keep // n_draws == c] % n_draws
        for start in range(0, len(rows), chunk):
            piece = posterior.isel(chain=[c], draw=rows[start:start + chunk])
            pi, theta, rho = probabilities(piece, rng)
            p = np.clip(_expected_numpy(data, pi, theta, rho)[:, live] / n, 1e-12, 1 - 1e-9)
            if spec.likelihood.family == "beta_binomial":
                log_c = (piece["log_concentration"].values.reshape(-1, 1)
                         if "log_concentration" in piece
                         else np.full((len(p), 1), spec.likelihood.concentration.mu))
                p = rng.beta(p * np.exp(log_c), (1 - p) * np.exp(log_c))
            pieces.append(rng.binomial(np.broadcast_to(n, p.shape), p))
    draws = np.concatenate(pieces)
    lo_obs, hi_obs = data.obs_lo[live], data.obs_hi[live]
    tail = (1 - prob) / 2
    lower, median, upper = np.quantile(draws, [tail, 0.5, 1 - tail], axis=0)
    mid = (lo_obs + hi_obs) / 2.0
    below = (draws < mid[None, :]).mean(axis=0)
    ties = (draws == mid[None, :]).mean(axis=0)
    obs = dataset.observations.reset_index(drop=True).iloc[live]
    obs_area = np.zeros(len(data.obs_lo), dtype=int)
    obs_area[data.pair_obs] = data.cell_area[data.pair_cell]
    table = pd.DataFrame({
        "observation": live, "register": obs["register"].to_numpy(),
        "area": np.asarray(data.areas, dtype=object)[obs_area[live]],
        "population": n, "lo": lo_obs, "hi": hi_obs, "lower": lower, "median": median,
        "upper": upper, "percentile": below + ties / 2,
        "inside": (hi_obs >= lower) & (lo_obs <= upper)})
    return RegisterCheck(table=table, draws=draws, prob=prob)


def _expected_numpy(data: ModelData, pi: np.ndarray, theta: np.ndarray,
                    rho: np.ndarray | None) -> np.ndarray:
    """Per draw and observation, sum over its cells of N pi theta w."""
    found = data.population[None, :] * pi * theta
    contribution = found[:, data.pair_cell]
    if rho is not None and data.uses_completeness:
        contribution = contribution * data.pair_weights(rho)
    return summed_by(contribution, data.pair_obs, len(data.obs_lo))
