"""A spec's model written the straightforward way, for the benchmarks' comparison rows.

The same priors and likelihood as `gapmodel.model.build_model`, from the same
`ModelData`, but as one would first write them in PyMC: every parameter sampled as itself
(no shears along the registers' ridges, no anchored level effects), the area effects
sampled and centred (no Laplace collapse), cells gathered and summed by index. What the
product's parametrisation is worth is the difference between the two under the same
sampler and data.

Covers what the England PCN specs use: group effects (free, rw1, rw2), detection and
prevalence covariates, iid or nested area effects, per-area prevalence deviations
(normal), the treated share, survey or published evidence, binomial registers. Anything
else (BYM2 effects, recording completeness, free relative risks, beta-binomial or Student t
terms) raises `Unsupported`, which the benchmarks print as the row's note.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy.special import logit

from gapmodel.data import Dataset
from gapmodel.model import ModelData, _register_loglik, prepare, reference_prior_centre
from gapmodel.spec import GroupEffect, ModelSpec, NormalPrior


class Unsupported(ValueError):
    """The spec uses a feature the plain model does not write out."""


def plain_model(dataset: Dataset, spec: ModelSpec) -> pm.Model:
    """The spec's model, written plainly (module docstring); variables keep the product's
    names, so the gate's hyperparameters are the same quantities."""
    data = prepare(dataset, spec)
    _check(spec, data)
    area = spec.detection.area
    coords = {"area": data.areas, "ref_stratum": data.ref_strata, **data.group_levels}
    with pm.Model(coords=coords) as model:
        gamma0 = _normal("gamma0", spec.detection.intercept)
        group_term = pt.zeros(data.n_cells)
        for attr, effect in spec.detection.groups.items():
            gamma = _group(attr, effect, len(data.group_levels[attr]))
            group_term = group_term + gamma[data.cell_group[attr]]
        mean = gamma0 + _covariates("beta_theta", data.x_theta, spec.detection.covariates)
        if area.type == "nested":
            for level in reversed(dataset.levels):
                if level not in area.levels:
                    continue
                s = pm.HalfNormal(f"sigma_level_{level}", area.sigma)
                unit = pm.Normal(f"v_{level}", gamma0, s, shape=data.level_sizes[level])
                mean = mean + unit[data.level_index[level]] - gamma0
        sigma_u = pm.HalfNormal("sigma_u", area.sigma)
        u = pm.Normal("u", mean, sigma_u, dims="area")
        centre = reference_prior_centre(data)
        alpha = pm.Normal("alpha", centre, spec.prevalence.intercept_sigma, dims="ref_stratum")
        logit_pi = alpha[data.cell_ref] + data.cell_offset_fixed
        area_pi = _covariates("beta_pi", data.x_pi, spec.prevalence.covariates)
        if spec.prevalence.sigma_eps > 0:
            area_pi = area_pi + pm.Normal("eps", 0.0, spec.prevalence.sigma_eps, dims="area")
        pi = pm.math.sigmoid(logit_pi + area_pi[data.cell_area])
        theta = pm.math.sigmoid(u[data.cell_area] + group_term)
        found = (data.population * pi * theta)[data.pair_cell]
        mu = pt.inc_subtensor(pt.zeros(len(data.obs_lo))[data.pair_obs], found)
        pm.Potential("register", _register_loglik(data, mu, None))
        cases = data.population * pi
        n_ref = len(data.ref_strata)
        pop_ref = np.bincount(data.cell_ref, weights=data.population, minlength=n_ref)
        cases_ref = pt.inc_subtensor(pt.zeros(n_ref)[data.cell_ref], cases)
        found_ref = pt.inc_subtensor(pt.zeros(n_ref)[data.cell_ref], cases * theta)
        _evidence(data, spec, cases_ref / np.maximum(pop_ref, 1.0),
                  found_ref / pt.maximum(cases_ref, 1e-9))
    return model


def _check(spec: ModelSpec, data: ModelData) -> None:
    reasons = [
        (spec.detection.area.type not in ("iid", "nested"),
         f"a {spec.detection.area.type} area effect"),
        (data.uses_completeness, "recording completeness"),
        (len(data.offset_groups) > 0, "free relative risks"),
        (spec.likelihood.family != "binomial", f"a {spec.likelihood.family} likelihood"),
        (spec.prevalence.eps_nu is not None, "Student t prevalence deviations"),
        (any(g.pooled for g in spec.detection.groups.values()), "pooled group effects"),
    ]
    found = [why for bad, why in reasons if bad]
    if found:
        raise Unsupported(f"the plain model does not write out {', '.join(found)}")


def _normal(name: str, prior: NormalPrior) -> pt.TensorVariable:
    return pm.Normal(name, prior.mu, prior.sigma) if prior.sigma > 0 else \
        pt.as_tensor(prior.mu)


def _group(attr: str, effect: GroupEffect, size: int) -> pt.TensorVariable:
    """A detection group effect with a fixed scale: sum-to-zero normal, or a random walk
    of its ordered levels (steps of that scale), centred."""
    if size < 2:
        return pt.zeros(size)
    if effect.type == "free":
        return pm.ZeroSumNormal(f"gamma_{attr}", sigma=effect.sigma, dims=attr)
    steps = pm.Normal(f"step_{attr}", 0.0, effect.sigma, shape=size - 1)
    walk = pt.concatenate([pt.zeros(1), pt.cumsum(steps)])
    if effect.type == "rw2":
        walk = pt.concatenate([pt.zeros(1), pt.cumsum(walk[1:])])
    return pm.Deterministic(f"gamma_{attr}", walk - walk.mean(), dims=attr)


def _covariates(name: str, x: np.ndarray, priors: dict[str, NormalPrior]
                ) -> pt.TensorVariable:
    """x @ beta, beta normal where its prior has a scale and fixed at its mean where not."""
    if not priors:
        return pt.zeros(x.shape[0])
    mu = np.array([p.mu for p in priors.values()])
    sigma = np.array([p.sigma for p in priors.values()])
    beta = pt.as_tensor(mu)
    free = np.flatnonzero(sigma > 0)
    if len(free):
        beta = pt.set_subtensor(beta[free], pm.Normal(name, mu[free], sigma[free]))
    return pt.dot(x, beta)


def _evidence(data: ModelData, spec: ModelSpec, pi_ref, theta_ref) -> None:
    """Prevalence, diagnosed and treated evidence on the reference strata's rates: survey
    counts (over their design effect) as binomial, published rates as normal on the logit
    scale with the sd of their 95% interval."""
    pos = {k: i for i, k in enumerate(data.ref_strata)}
    targets = {"prevalence": pi_ref, "diagnosed": theta_ref}
    if (data.reference["measure"] == "treated").any():
        prior = spec.detection.treated
        tau = pm.Normal("logit_treated", prior.mu, prior.sigma)
        targets["treated"] = theta_ref * pm.math.sigmoid(tau)
    for measure, rate in targets.items():
        rows = data.reference[data.reference["measure"] == measure]
        if rows.empty:
            continue
        idx = np.array([pos[k] for k in rows["ref_stratum"]])
        p = pt.clip(rate[idx], 1e-9, 1 - 1e-9)
        counts = (rows["kind"] == "counts").to_numpy()
        deff = rows["design_effect"].to_numpy(dtype=float) if counts.any() else None
        if counts.any():
            y = rows["y"].to_numpy(dtype=float)[counts] / deff[counts]
            n = rows["n"].to_numpy(dtype=float)[counts] / deff[counts]
            pm.Potential(f"{measure}_survey", pt.sum(y * pt.log(p[counts])
                                                     + (n - y) * pt.log1p(-p[counts])))
        if (~counts).any():
            r = rows[~counts]
            sd = (logit(r["upper"].to_numpy()) - logit(r["lower"].to_numpy())) / (2 * 1.959964)
            logit_p = pt.log(p[~counts]) - pt.log1p(-p[~counts])
            pm.Normal(f"{measure}_published", mu=logit_p, sigma=sd,
                      observed=logit(r["rate"].to_numpy()))
