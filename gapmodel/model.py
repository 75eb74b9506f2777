"""Dataset + ModelSpec -> PyMC model of true prevalence and detection (MODEL.md).

    logit pi_c    = alpha_k(s) + offset_s + beta_pi . X_a + sigma_eps eps_a  (eps normal or t)
    logit theta_c = u_a + sum_attr gamma_attr[s],   u_a ~ area effect around
                    gamma_0 + beta_theta . X_a
    R_o ~ (Beta-)Binomial(N_o, sum_{c in o} N_c pi_c theta_c w_oc / N_o), interval-censored

`w_oc` is 1, or the area's recording completeness rho (observations with the attribute
recorded) or 1 - rho ("not stated" observations). Group effects sum to zero; covariates
are standardised over populated areas. Parametrisation follows the data's density: area
effects centred (hierarchical centring, BYM2 in the Laplacian eigenbasis, or integrated
out per area) where areas hold many people, non-centred otherwise; docs/model.md gives the
measurements behind each choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt
from pymc.distributions.transforms import ZeroSumTransform
from pytensor.compile.builders import OpFromGraph
from scipy.special import expit, logit

from gapmodel.area_laplace import BinomialAreas
from gapmodel.data import Dataset
from gapmodel.graph import Graph, component_scaling
from gapmodel.layout import (
    area_sums,
    completeness_order,
    grid_strata,
    index_sums,
    obs_are_areas,
    obs_totals,
    register_totals,
    summed_by_strata,
    to_cells,
)
from gapmodel.likelihood import beta_binomial_logpmf, binomial_logpmf, interval_logp
from gapmodel.shifted_laplacian import ShiftedLaplacian
from gapmodel.spec import AreaEffect, GroupEffect, ModelSpec, NormalPrior

log = logging.getLogger(__name__)

#: Registered cases an area needs to take part in the anchors of `_anchored_prior`.
MIN_ANCHOR_COUNT = 50

#: Free parameters monitored by the convergence gate (those present in a given model).
HYPERPARAMETERS = ("alpha", "log_rr", "beta_pi", "gamma0", "sigma_group", "beta_theta",
                   "sigma_u", "rho_bym2", "sigma_level", "mu_rho", "sigma_rho",
                   "log_concentration", "logit_treated")


@dataclass(frozen=True)
class ModelData:
    """Numpy index arrays and constants derived once from a Dataset for a spec."""

    n_cells: int
    population: np.ndarray  # (C,)
    cell_area: np.ndarray  # (C,) area index
    cell_ref: np.ndarray  # (C,) reference-stratum index
    ref_strata: list[str]
    areas: list[str]
    x_pi: np.ndarray  # (A, P) standardised
    x_theta: np.ndarray  # (A, Q) standardised
    covariate_scaling: dict[str, tuple[float, float]]
    group_levels: dict[str, list[str]]
    cell_group: dict[str, np.ndarray]  # attribute -> (C,) level index
    offset_groups: pd.DataFrame  # one row per free relative risk: mean, sd
    cell_offset_fixed: np.ndarray  # (C,) fixed log-RR
    cell_offset_group: np.ndarray  # (C,) index into offset_groups, -1 if none
    pair_obs: np.ndarray
    pair_cell: np.ndarray
    pair_kind: np.ndarray  # 0 plain, 1 attribute recorded (x rho), 2 not stated (x 1-rho)
    obs_population: np.ndarray
    obs_lo: np.ndarray
    obs_hi: np.ndarray
    reference: pd.DataFrame
    level_index: dict[str, np.ndarray] = field(default_factory=dict)  # level -> (A,) index
    level_sizes: dict[str, int] = field(default_factory=dict)
    #: do most recorded counts fall in observations within one reference stratum (rather
    #: than totals over many)? Then registers pin pi * theta stratum by stratum.
    resolves_strata: bool = False
    #: cells per area where cells form a complete area-major grid (gapmodel.layout), else 0
    grid_strata: int = 0
    #: is observation a the plain total of area a's cells, for every area in order?
    obs_are_areas: bool = False

    @property
    def uses_completeness(self) -> bool:
        return bool((self.pair_kind > 0).any())

    def pair_weights(self, rho: np.ndarray) -> np.ndarray:
        """Each pair's weight at each row of `rho` (draw x area): rho of the cell's area
        where the attribute is recorded, 1 - rho where it is not stated, else 1. One gather
        from the table [rho, 1 - rho, 1] (at 1,000 areas a sixth of the time of nested
        selects)."""
        n_areas = rho.shape[1]
        column = np.select([self.pair_kind == 1, self.pair_kind == 2],
                           [self.cell_area[self.pair_cell],
                            n_areas + self.cell_area[self.pair_cell]], 2 * n_areas)
        table = np.concatenate([rho, 1 - rho, np.ones((len(rho), 1))], axis=1)
        return table[:, column]


def _standardise(frame: pd.DataFrame, names: list[str], populated: np.ndarray
                 ) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    out = np.zeros((len(frame), len(names)))
    scaling = {}
    for j, name in enumerate(names):
        if name not in frame.columns:
            raise ValueError(f"covariate '{name}' is not in the dataset (has: "
                             f"{', '.join(frame.columns) or 'none'})")
        values = frame[name].to_numpy(dtype=float)
        ref = values[populated]
        mean, sd = float(np.nanmean(ref)), float(np.nanstd(ref)) or 1.0
        out[:, j] = np.nan_to_num((values - mean) / sd)
        scaling[name] = (mean, sd)
    return out, scaling


def _level_order(values: pd.Series, effect: GroupEffect) -> list[str]:
    present = list(dict.fromkeys(values))
    if effect.order is None:
        return present
    missing = set(present) - set(effect.order)
    if missing:
        raise ValueError(f"group order lacks levels {sorted(missing)}")
    return [v for v in effect.order if v in set(present)]


def prepare(dataset: Dataset, spec: ModelSpec) -> ModelData:
    """Index arrays for the model; refuses a spec that does not fit the dataset."""
    cells = dataset.cells
    areas = list(dataset.areas["area"])
    area_pos = pd.Series(np.arange(len(areas)), index=areas)
    cell_area = area_pos[cells["area"]].to_numpy()
    populated = np.zeros(len(areas), dtype=bool)
    populated[np.unique(cell_area[cells["population"].to_numpy() > 0])] = True

    ref_prev = dataset.reference[dataset.reference["measure"] == "prevalence"]
    ref_strata = list(ref_prev["ref_stratum"])
    rmap = dataset.reference_map.set_index("stratum")
    cell_ref = pd.Series(np.arange(len(ref_strata)), index=ref_strata)[
        rmap.loc[cells["stratum"], "ref_stratum"]].to_numpy()

    rr = rmap.loc[cells["stratum"], ["log_rr_mean", "log_rr_sd"]].reset_index(drop=True)
    free = rr["log_rr_sd"] > 0
    groups = rr[free].drop_duplicates().reset_index(drop=True)
    group_pos = {tuple(r): i for i, r in enumerate(groups.itertuples(index=False))}
    cell_offset_group = np.array([group_pos.get(tuple(r), -1) if f else -1
                                  for r, f in zip(rr.itertuples(index=False), free,
                                                  strict=True)])
    cell_offset_fixed = np.where(free, 0.0, rr["log_rr_mean"].to_numpy())

    x_pi, s_pi = _standardise(dataset.covariates, list(spec.prevalence.covariates), populated)
    x_th, s_th = _standardise(dataset.covariates, list(spec.detection.covariates), populated)

    group_levels, cell_group = {}, {}
    for attr, effect in spec.detection.groups.items():
        if attr not in dataset.attributes:
            raise ValueError(f"detection group '{attr}' is not a stratum attribute "
                             f"({', '.join(dataset.attributes)})")
        levels = _level_order(dataset.strata[attr], effect)
        group_levels[attr] = levels
        cell_group[attr] = pd.Series(np.arange(len(levels)), index=levels)[cells[attr]] \
            .to_numpy()

    obs = dataset.observations.reset_index(drop=True)
    pairs = dataset.obs_cells
    pair_obs, pair_cell = pairs["obs"].to_numpy(), pairs["cell"].to_numpy()
    incomplete = obs["incomplete"].to_numpy()
    registers_with_missing = set(obs.loc[incomplete != "", "register"])
    kind = np.where(incomplete != "", 2,
                    np.where(obs["register"].isin(registers_with_missing), 1, 0))
    if (kind > 0).any() and spec.missing is None:
        raise ValueError("the dataset has 'not stated' observations: the spec needs a "
                         "'missing' section (recording completeness)")

    level_index, level_sizes = {}, {}
    area_spec = spec.detection.area
    if area_spec.collapse:
        spread = pd.Series(cell_area[pair_cell]).groupby(pair_obs).nunique()
        if (spread > 1).any():
            raise ValueError(f"detection.area.collapse needs each register count within one "
                             f"area; {int((spread > 1).sum())} counts span several areas")
    if area_spec.type == "nested":
        for level in area_spec.levels:
            if level not in dataset.areas.columns:
                raise ValueError(f"nested level '{level}' is not in the hierarchy "
                                 f"({', '.join(dataset.levels)})")
            codes, uniques = pd.factorize(dataset.areas[level])
            level_index[level], level_sizes[level] = codes, len(uniques)
    within = pd.Series(cell_ref[pair_cell]).groupby(pair_obs).nunique() == 1
    counts = ((obs["lo"] + obs["hi"]) / 2.0).to_numpy()
    resolved = counts[within.index[within.to_numpy()]].sum() > 0.5 * counts.sum()
    return ModelData(
        resolves_strata=bool(resolved),
        grid_strata=grid_strata(cell_area, cells["stratum"].to_numpy(), len(areas)),
        obs_are_areas=obs_are_areas(pair_obs, pair_cell, cell_area, kind[pair_obs], len(obs),
                                    len(areas)),
        n_cells=len(cells), population=cells["population"].to_numpy(dtype=float),
        cell_area=cell_area, cell_ref=cell_ref, ref_strata=ref_strata, areas=areas,
        x_pi=x_pi, x_theta=x_th, covariate_scaling={**s_pi, **s_th},
        group_levels=group_levels, cell_group=cell_group, offset_groups=groups,
        cell_offset_fixed=cell_offset_fixed, cell_offset_group=cell_offset_group,
        pair_obs=pair_obs, pair_cell=pair_cell, pair_kind=kind[pair_obs],
        obs_population=obs["population"].to_numpy(dtype=float),
        obs_lo=obs["lo"].to_numpy(dtype=np.int64), obs_hi=obs["hi"].to_numpy(dtype=np.int64),
        reference=dataset.reference.reset_index(drop=True),
        level_index=level_index, level_sizes=level_sizes)


def runtime_constant(values: np.ndarray) -> pt.TensorVariable | np.ndarray:
    """A fixed array for the model's graph. Numba embeds constants up to 1 MB in the compiled
    function; a larger one makes the whole function uncacheable, so every process compiles
    it afresh (30 s and more on England by PCN). Larger arrays go in as shared variables,
    which the function takes at run time."""
    return pytensor.shared(values) if values.nbytes > 1_000_000 else values


def _normal(name: str, prior: NormalPrior, **kwargs) -> pt.TensorVariable:
    if prior.sigma == 0:
        return pt.as_tensor(prior.mu)
    return pm.Normal(name, prior.mu, prior.sigma, **kwargs)


def _evidence_cases(data: ModelData) -> np.ndarray:
    """Each cell's cases expected from the prevalence evidence (prior centres, offsets at
    their means)."""
    logit_rate = reference_prior_centre(data)[data.cell_ref] + data.cell_offset_fixed
    has = data.cell_offset_group >= 0
    rr_mean = data.offset_groups["log_rr_mean"].to_numpy() if len(data.offset_groups) \
        else np.zeros(1)
    logit_rate = logit_rate + np.where(has, rr_mean[np.maximum(data.cell_offset_group, 0)], 0)
    return data.population * expit(logit_rate)


def _group_rates(data: ModelData, groups: np.ndarray, n_groups: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per group of cells (-1: none): prevalence from the evidence (the prior centre) and
    detection from the registers, each count shared over its cells in proportion to their
    expected cases (so registers of totals give every group the same detection)."""
    expected = _evidence_cases(data)
    count = (data.obs_lo + data.obs_hi) / 2.0
    obs_expected = np.bincount(data.pair_obs, weights=expected[data.pair_cell],
                               minlength=len(count))
    share = expected[data.pair_cell] / np.maximum(obs_expected[data.pair_obs], 1e-12)
    recorded = np.bincount(data.pair_cell, weights=count[data.pair_obs] * share,
                           minlength=data.n_cells)
    keep = groups >= 0

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(groups[keep], weights=values[keep], minlength=n_groups)

    prevalence = total(expected) / np.maximum(total(data.population), 1.0)
    detection = np.clip(total(recorded) / np.maximum(total(expected), 1e-12), 0.05, 0.95)
    return prevalence, detection


def _ridge_slopes(data: ModelData, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group of cells, lambda = (1 - prevalence) / (1 - detection): along the ridge
    registers leave open, d logit pi = -d logit theta / lambda keeps pi * theta fixed."""
    prevalence, detection = _group_rates(data, groups, n_groups)
    return (1.0 - prevalence) / (1.0 - detection)


@dataclass(frozen=True)
class DetectionSpread:
    """How the spread of area detection effects given the registers follows the detection
    intercept (`_detection_spread`): `shift` = kappa (gamma0 - its prior mean), and
    `information`, an area's mean Fisher information on its detection logit."""

    shift: pt.TensorVariable
    information: float

    def log_factor(self, sd) -> pt.TensorVariable:
        """log of the factor by which a direction whose prior sd is `sd` widens: the
        shift times the data's share of its precision."""
        return self.shift * self.information / (self.information + sd ** -2)


def _detection_spread(spec: ModelSpec, data: ModelData, gamma0) -> DetectionSpread:
    """kappa = d log sd / d gamma0 of an area's detection effect where the registers pin
    it, along the ridge they leave open (`_ridge_slopes`). A cell's Fisher information on
    its detection logit eta is N pi theta (1 - theta)^2 / (1 - pi theta); with pi theta
    held fixed it changes by -2 theta d eta, so the spread given the data grows as
    exp(kappa d gamma0), kappa the information-weighted mean detection. Rates as the
    ridges' (`_group_rates`): prevalence from the evidence, detection from the registers."""
    cells = np.arange(data.n_cells)
    prevalence, detection = _group_rates(data, cells, data.n_cells)
    recorded = prevalence * detection
    information = data.population * recorded * (1.0 - detection) ** 2 / (1.0 - recorded)
    total = information.sum()
    kappa = float((information * detection).sum() / total) if total > 0 else 0.0
    return DetectionSpread(kappa * (gamma0 - spec.detection.intercept.mu),
                           float(total / max(len(data.areas), 1)))


def _prevalence_shifts(spec: ModelSpec, data: ModelData, gamma0,
                       effects: dict[str, pt.TensorVariable]
                       ) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """How far the prevalence intercepts (alpha, by reference stratum) and the free
    relative risks (log_rr) move along the ridge that registers leave open when the
    detection terms move.

    Registers pin pi * theta, so within the evidence's uncertainty a higher detection in a
    cell goes with a lower prevalence there: d logit pi ~ -d eta / lambda,
    lambda = (1 - pi) / (1 - theta), eta the cell's detection logit less its area effect.
    Registers of totals pin only each stratum's level, which moves with the intercept.
    Registers by stratum pin every cell, so every group effect has its own ridge: the
    shifts are the weighted least-squares fit (weights: expected cases) of
    (eta_c - eta0_c) / lambda_c over the cells by alpha and log_rr (which move by minus
    the shift), a fixed linear map of the intercept and group effects. An ethnic group's
    detection effect then moves its own relative risk, and the reference group's moves
    alpha, with the others' relative risks moving back."""
    n_ref, n_rr = len(data.ref_strata), len(data.offset_groups)
    level = gamma0 - spec.detection.intercept.mu
    if not data.resolves_strata:
        return level / _ridge_slopes(data, data.cell_ref, n_ref), pt.zeros(n_rr)
    # each cell takes the slope of its stratum and relative-risk group together
    group, _ = pd.factorize(data.cell_ref * (n_rr + 1) + data.cell_offset_group + 1)
    slope = _ridge_slopes(data, group, group.max() + 1)[group]
    design = np.zeros((data.n_cells, n_ref + n_rr))
    design[np.arange(data.n_cells), data.cell_ref] = 1.0
    has = np.flatnonzero(data.cell_offset_group >= 0)
    design[has, n_ref + data.cell_offset_group[has]] = 1.0
    weight = np.sqrt(_evidence_cases(data))
    fit = np.linalg.pinv(design * weight[:, None]) * (weight / slope)[None, :]
    shift = level * fit.sum(axis=1)
    for attr, gamma in effects.items():
        levels = data.cell_group[attr]
        by_level = np.stack([fit[:, levels == k].sum(axis=1)
                             for k in range(len(data.group_levels[attr]))], axis=1)
        shift = shift + pt.dot(by_level, gamma)
    return shift[:n_ref], shift[n_ref:]


def _sheared_offsets(data: ModelData, shift) -> pt.TensorVariable:
    """Relative risks (log scale) sampled along the registers' ridge (`_prevalence_shifts`):
    log_rr = m + r - shift with r the sampled coordinate. Unit Jacobian; the prior stays
    on the relative risks."""
    groups = data.offset_groups
    mean, sd = groups["log_rr_mean"].to_numpy(), groups["log_rr_sd"].to_numpy()
    free = pm.Flat("log_rr_sheared", shape=len(groups))
    log_rr = pm.Deterministic("log_rr", mean + free - shift)
    pm.Potential("log_rr_prior", pm.logp(pm.Normal.dist(mean, sd), log_rr).sum())
    return log_rr


def _sheared_alpha(spec: ModelSpec, data: ModelData, shift) -> pt.TensorVariable:
    """The prevalence intercepts, sampled along the ridge that registers leave open.

    Sampling alpha directly leaves that ridge as long diagonals against the detection
    terms; here alpha_k = m_k + a_k - shift_k (`_prevalence_shifts`) with a_k the sampled
    coordinate: a shear with unit Jacobian, the prior and the evidence staying exactly on
    alpha itself.
    """
    centre = reference_prior_centre(data)
    free = pm.Flat("alpha_sheared", dims="ref_stratum")
    alpha = pm.Deterministic("alpha", centre + free - shift, dims="ref_stratum")
    pm.Potential("alpha_prior", pm.logp(pm.Normal.dist(centre, spec.prevalence.intercept_sigma),
                                        alpha).sum())
    return alpha


def _coefficients(name: str, priors: list[NormalPrior], dim: str) -> pt.TensorVariable:
    """Covariate coefficients: Normal priors, or fixed values where a prior's sigma is 0
    (a sensitivity choice, e.g. a published effect on true prevalence)."""
    mu = np.array([p.mu for p in priors])
    sigma = np.array([p.sigma for p in priors])
    if (sigma > 0).all():
        return pm.Normal(name, mu, sigma, dims=dim)
    if (sigma == 0).all():
        return pt.as_tensor(mu)
    free = np.flatnonzero(sigma > 0)
    values = pm.Normal(name, mu[free], sigma[free])
    return pt.set_subtensor(pt.as_tensor(mu)[free], values)


def _group_effect(attr: str, effect: GroupEffect, size: int) -> pt.TensorVariable:
    sigma = pm.HalfNormal(f"sigma_group_{attr}", effect.sigma) if effect.pooled \
        else effect.sigma
    if size < 2:
        return pt.zeros(size)
    if effect.type == "free":
        if effect.centered:
            return pm.ZeroSumNormal(f"gamma_{attr}", sigma=sigma, dims=attr)
        return pm.Deterministic(f"gamma_{attr}",
                                sigma * pm.ZeroSumNormal(f"z_{attr}", dims=attr), dims=attr)
    steps = pm.Normal(f"z_{attr}", 0.0, 1.0, shape=size - 1)
    walk = pt.concatenate([pt.zeros(1), pt.cumsum(steps * sigma)])
    if effect.type == "rw2":
        walk = pt.concatenate([pt.zeros(1), pt.cumsum(walk[1:])])
    return pm.Deterministic(f"gamma_{attr}", walk - walk.mean(), dims=attr)


def _area_effect(spec: ModelSpec, data: ModelData, dataset: Dataset, intercept,
                 covariate_term, covariates=None) -> pt.TensorVariable:
    """Area-level logit detection: intercept + covariate term (X beta, `covariates` = (X,
    beta) or None) + the area effect."""
    area = spec.detection.area
    mean = intercept + covariate_term
    if area.type == "none":
        return mean
    if area.type == "bym2":
        graph = area_graph(dataset)
        if not len(graph.edges):
            raise ValueError("a BYM2 area effect needs an adjacency table")
        spread = _detection_spread(spec, data, intercept) if area.centered else None
        return bym2_effect(graph, sigma_prior=area.sigma, centered=area.centered, mean=mean,
                           rho_prior=area.rho_prior, covariates=covariates, spread=spread)
    sigma = pm.HalfNormal("sigma_u", area.sigma)
    if area.type == "iid":
        if area.centered:
            return pm.Normal("u", mean, sigma, dims="area")
        return mean + sigma * pm.Normal("z_u", 0.0, 1.0, dims="area")
    if area.centered:  # nested
        return _nested_centred(sigma, area, data, dataset.levels, intercept, covariate_term)
    return _nested_effect(sigma, area, data, dataset.levels, mean)


def _nested_effect(sigma, area: AreaEffect, data: ModelData, hierarchy: tuple[str, ...],
                   mean) -> pt.TensorVariable:
    """Non-centred: mean + sums of scaled unit normals for the area and each level."""
    total = mean + sigma * pm.Normal("z_u", 0.0, 1.0, dims="area")
    for level in _coarse_to_fine(area, hierarchy):
        s = pm.HalfNormal(f"sigma_level_{level}", area.sigma)
        z = pm.Normal(f"z_{level}", 0.0, 1.0, shape=data.level_sizes[level])
        total = total + (s * z)[data.level_index[level]]
    return total


def _nested_centred(sigma, area: AreaEffect, data: ModelData, hierarchy: tuple[str, ...],
                    intercept, covariate_term) -> pt.TensorVariable:
    """Centred (hierarchical centring, right when every area has plenty of data): the
    coarsest level is normal around the intercept, each finer unit around its parent, and
    each area around its parent plus its covariate term."""
    parent = _nested_levels(area, data, hierarchy, intercept)
    return pm.Normal("u", parent + covariate_term, sigma, dims="area")


def _nested_levels(area: AreaEffect, data: ModelData, hierarchy: tuple[str, ...],
                   intercept, centered: bool = True) -> pt.TensorVariable:
    """Level effects, coarse to fine, each around its parent (the coarsest around the
    intercept); returns each area's parent effect. Non-centred, the units move with their
    parent, so a shift of the intercept needs no move of theirs."""
    centre = intercept
    previous: tuple[str, pt.TensorVariable] | None = None
    for level in _coarse_to_fine(area, hierarchy):
        index = data.level_index[level]
        s = pm.HalfNormal(f"sigma_level_{level}", area.sigma)
        if previous is not None:
            first = np.zeros(data.level_sizes[level], dtype=int)
            first[index[::-1]] = np.arange(len(index))[::-1]  # an area of each unit
            centre = previous[1][data.level_index[previous[0]][first]]
        if centered:
            effect = pm.Normal(f"v_{level}", centre, s, shape=data.level_sizes[level])
        else:
            z = pm.Normal(f"z_{level}", 0.0, 1.0, shape=data.level_sizes[level])
            effect = pm.Deterministic(f"v_{level}", centre + s * z)
        previous = (level, effect)
    if previous is None:
        return intercept + pt.zeros(len(data.areas))
    return previous[1][data.level_index[previous[0]]]


def _coarse_to_fine(area: AreaEffect, hierarchy: tuple[str, ...]) -> list[str]:
    return [lvl for lvl in reversed(hierarchy) if lvl in area.levels]


def area_graph(dataset: Dataset) -> Graph:
    pos = pd.Series(np.arange(len(dataset.areas)), index=dataset.areas["area"])
    edges = np.column_stack([pos[dataset.adjacency["area1"]].to_numpy(),
                             pos[dataset.adjacency["area2"]].to_numpy()]) \
        if len(dataset.adjacency) else np.zeros((0, 2), dtype=int)
    return Graph.from_edges(len(dataset.areas), edges)


#: Largest component sampled centred in its Laplacian eigenbasis: the basis is dense (n^2
#: memory, two n^2 products per gradient, bound by memory bandwidth). On bench/bym2.py's
#: Poisson maps the eigenbasis gets 2.9x the non-centred ESS per second at 1,000 areas and
#: 0.86x at 2,000; larger components are sampled centred in sparse form
#: (`gapmodel.shifted_laplacian`).
EIGEN_LIMIT = 1500


def bym2_effect(graph: Graph, *, sigma_prior: float, centered: bool, mean=0.0,
                rho_prior: tuple[float, float] = (1.0, 1.0),
                eigen_limit: int = EIGEN_LIMIT, covariates=None, spread=None
                ) -> pt.TensorVariable:
    """BYM2 (Riebler et al. 2016) on the adjacency graph, each connected component's ICAR
    scaled on its own; isolated areas take the unstructured part only (variance sigma^2).
    Its scale sigma (`sigma_u`) has a HalfNormal(`sigma_prior`) prior, its mixing rho
    (`rho_bym2`) a Beta(`rho_prior`).

    centred (data-rich areas): u itself is sampled with the BYM2 prior marginalised over
    the structured part; the covariance per unit sigma^2 is (1 - rho) I + rho Q^+ / s.
    Components up to `eigen_limit` areas are evaluated in their Laplacian eigenbasis,
    larger ones in sparse form (a conjugate-gradient solve per gradient), and then sigma
    is sampled relative to the scale those areas' effects imply (`_sheared_sigma`).
    Where `mean` is one level for all areas plus X beta, `covariates` = (X, beta) lets each
    eigenbasis project X once, at build, in place of projecting the mean at every
    gradient (two of four products with a dense n x n matrix, the level projecting to 0).
    `spread` (a `DetectionSpread`, centred only) samples each eigenbasis's coordinates in
    units that widen with the detection intercept, as the data's hold on them loosens
    (`_eigen_deviation`); components in sparse form are unchanged.
    Non-centred (thin data): ICAR by pairwise differences with a hard sum-to-zero
    constraint per component, mixed with unit normals.
    """
    if centered:
        return _bym2_marginal(sigma_prior, rho_prior, graph, mean, eigen_limit, covariates,
                              spread)
    sigma = pm.HalfNormal("sigma_u", sigma_prior)
    rho = pm.Beta("rho_bym2", *rho_prior)
    scale = graph.scaling_factors()
    connected = ~graph.isolated
    phi = pt.zeros(graph.n)
    for label in np.flatnonzero(graph.sizes > 1):
        members = np.flatnonzero(graph.component == label)
        part = pm.Flat(f"phi_u{label}" if len(graph.sizes) > 1 else "phi_u",
                       shape=len(members), default_transform=ZeroSumTransform([-1]))
        phi = pt.set_subtensor(phi[members], part)
    i, j = graph.edges[:, 0], graph.edges[:, 1]
    pm.Potential("icar", -0.5 * pt.sum((phi[i] - phi[j]) ** 2))
    structured = phi / np.sqrt(np.nan_to_num(scale, nan=1.0))
    shift = pt.where(connected, sigma * pt.sqrt(rho) * structured, 0.0)
    sd = pt.where(connected, sigma * pt.sqrt(1 - rho), sigma)
    return mean + shift + sd * pm.Normal("z_u", 0.0, 1.0, dims="area")


def _bym2_marginal(sigma_prior: float, rho_prior: tuple[float, float], graph: Graph,
                   mean=0.0, eigen_limit: int = EIGEN_LIMIT, covariates=None, spread=None
                   ) -> pt.TensorVariable:
    """u ~ N(mean, sigma^2 [(1 - rho) I + rho Q^+ / s]) per component: the non-constant
    directions centred (the data pin them), the constant direction (variance
    sigma^2 (1 - rho), which vanishes as rho -> 1) non-centred so that no funnel forms.
    Isolated areas: N(mean, sigma^2). With components in sparse form, sigma is sheared
    along their effects (`_sheared_sigma`)."""
    laplacian = graph.laplacian()
    mean = pt.as_tensor(mean) + pt.zeros(graph.n)
    members = {label: np.flatnonzero(graph.component == label)
               for label in np.flatnonzero(graph.sizes > 1)}
    large = [label for label, m in members.items() if len(m) > eigen_limit]
    sigma = None if large else pm.HalfNormal("sigma_u", sigma_prior)
    rho = pm.Beta("rho_bym2", *rho_prior)
    # each component's effects are sampled as u's own non-constant part: around the
    # non-constant part of its mean (hierarchical centring)
    centred = {label: _centred_part(mean, m) for label, m in members.items()}
    sparse = {label: _SparseComponent.build(rho, laplacian[members[label]][:, members[label]],
                                            label, centred[label]) for label in large}
    if sparse:
        sigma = _sheared_sigma(sigma_prior, rho, list(sparse.values()))
    # The components' effects are set into zeros and the mean added after: PyTensor's
    # rewrite of set_subtensor(u[i], u[i] + a + b) into an increment kept a and dropped b,
    # which left each component's constant direction out of the likelihood.
    effect = pt.zeros(graph.n)
    for label, m in members.items():
        deviation = sparse[label].deviation(sigma, rho) if label in sparse \
            else _eigen_deviation(sigma, rho, laplacian[m][:, m], label, centred[label],
                                  None if covariates is None else
                                  (covariates[0][m], covariates[1]), spread)
        c = pm.Normal(f"c_u{label}", 0.0, 1.0)
        constant = sigma * pt.sqrt(1 - rho) * c / np.sqrt(len(m))
        effect = pt.set_subtensor(effect[m], deviation + constant)
    u = mean + effect
    isolated = np.flatnonzero(graph.isolated)
    if len(isolated):
        u = pt.set_subtensor(u[isolated], pm.Normal("u_isolated", mean[isolated], sigma,
                                                    shape=len(isolated)))
    return pm.Deterministic("u", u, dims="area")


def _eigen_deviation(sigma, rho, laplacian, label, centred_mean, covariates=None,
                     spread=None) -> pt.TensorVariable:
    """A component's non-constant directions in its dense Laplacian eigenbasis, sampled
    as u's own, as the sparse form's are (`_SparseComponent.build`): the coordinates w
    of u's non-constant part, around those of the members' mean less its average, which
    is X_c beta where the mean is a level plus X beta (`covariates` = (X, beta) over the
    members, X_c X less its column means).

    With `spread`, w = centre + f w' with w' (`w_u<label>_spread`) sampled and
    log f = `spread.log_factor(sd)` per direction: a scaling by a factor of other
    variables, so the density gains the sum of log f and the model is unchanged. Where
    the registers pin the effects their spread given the data grows with the detection
    intercept, a funnel across every area that this takes out (docs/model.md)."""
    values, vectors = np.linalg.eigh(laplacian.toarray())
    values, vectors = values[1:], vectors[:, 1:]  # values[0] ~ 0: the constant vector
    scale = float(np.exp(np.mean(np.log((vectors ** 2 / values).sum(axis=1)))))
    sd = sigma * pt.sqrt((1 - rho) + rho / (scale * values))
    basis = runtime_constant(vectors)  # 7.5 MB at 1,000 areas
    if covariates is None:
        centre = pt.dot(basis.T, centred_mean)
    else:
        x, beta = covariates
        centre = pt.dot(vectors.T @ (x - x.mean(axis=0)), beta)
    if spread is None:
        w = pm.Normal(f"w_u{label}", centre, sd, shape=len(values))
    else:
        log_factor = spread.log_factor(sd)
        scaled = pm.Flat(f"w_u{label}_spread", shape=len(values))
        w = pm.Deterministic(f"w_u{label}", centre + pt.exp(log_factor) * scaled)
        pm.Potential(f"w_u{label}_prior", pm.logp(pm.Normal.dist(centre, sd), w).sum()
                     + log_factor.sum())
    return pt.dot(basis, w) - centred_mean


@dataclass(frozen=True)
class _SparseComponent:
    """A component's non-constant directions d (sum zero; sampled through u's own, `build`)
    with the BYM2 density in sparse form (`gapmodel.shifted_laplacian`):
    p = c d'Q (Q + cI)^{-1} d, c = rho / (s (1 - rho))."""

    label: int
    n: int
    scale: float
    shifted: ShiftedLaplacian
    d: pt.TensorVariable
    c: pt.TensorVariable
    p: pt.TensorVariable

    @classmethod
    def build(cls, rho, laplacian, label, centred_mean) -> _SparseComponent:
        """d = v - centred_mean (the members' mean less its average): v (`d_u<label>`) is
        the non-constant part of u itself, so that a covariate moves the effects' prior
        instead of the counts' fit and given the effects the data no longer pin its
        coefficient (hierarchical centring)."""
        n = laplacian.shape[0]
        log.info("BYM2: a component of %d areas is sampled centred in sparse form", n)
        scale = component_scaling(laplacian)
        shifted = ShiftedLaplacian.from_laplacian(laplacian)
        v = pm.Flat(f"d_u{label}", shape=n, default_transform=ZeroSumTransform([-1]))
        d = v - centred_mean
        c = rho / (scale * (1 - rho))
        return cls(label, n, scale, shifted, d, c, shifted.quadratic(d, c))

    def deviation(self, sigma, rho) -> pt.TensorVariable:
        """d, with its log density given sigma and rho added to the model."""
        variance = sigma**2 * rho / self.scale
        pm.Potential(f"bym2_u{self.label}", -self.p / (2 * variance)
                     - (self.n - 1) / 2 * pt.log(variance) - self.shifted.log_det(self.c) / 2)
        return self.d


def _centred_part(mean, members: np.ndarray) -> pt.TensorVariable:
    """mean[members] less its average, as one op closed to PyTensor's rewrites. PyMC
    copies every term that uses it (the counts reach it through sigma), and the rewrites
    moved the index inside the sums that make the mean in some copies and not in others:
    the copies of the solve that take it then no longer merged, two solves a gradient."""
    whole = pt.vector(dtype=mean.dtype)
    part = whole[members]
    return OpFromGraph([whole], [part - part.mean()], inline=False)(mean)


def _sheared_sigma(prior_scale: float, rho, parts: list[_SparseComponent]
                   ) -> pt.TensorVariable:
    """sigma ~ HalfNormal(prior_scale), sampled as its log ratio to the scale the sparse
    components' effects imply: sigma = hat * exp(t), hat^2 = sum s p / (rho sum (n - 1)),
    sigma's conditional mode given them.

    Given tens of thousands of centred effects, log sigma is pinned to about
    1 / sqrt(2n) while its posterior is several times wider: it can only move with the
    effects' overall scale, a correlation a diagonal mass matrix cannot take out. t is
    nearly independent of them. The map from t to sigma (d and rho fixed) has Jacobian
    sigma, so the density is exact: sigma's prior plus log sigma."""
    implied = sum(part.scale * part.p for part in parts) / (
        rho * sum(part.n - 1 for part in parts))
    # a floor keeps sigma positive at d = 0 (an unjittered initial point)
    hat = pt.sqrt(implied + (1e-6 * prior_scale) ** 2)
    sigma = pm.Deterministic("sigma_u", hat * pt.exp(pm.Flat("sigma_u_sheared")))
    pm.Potential("sigma_u_prior", pm.logp(pm.HalfNormal.dist(prior_scale), sigma)
                 + pt.log(sigma))
    return sigma


def _logit(p):
    p = pt.clip(p, 1e-9, 1 - 1e-9)
    return pt.log(p) - pt.log1p(-p)


def _treated_share(spec: ModelSpec, data: ModelData, gamma0) -> pt.TensorVariable:
    """logit tau, the treated share of the diagnosed, sampled along its ridge with the
    detection intercept: evidence on the treated share of all cases pins theta * tau, so
    d logit tau = -d logit theta (1 - theta) / (1 - tau). Unit Jacobian; the prior stays
    on tau itself."""
    prior = spec.detection.treated
    _, detection = _group_rates(data, np.zeros(data.n_cells, dtype=int), 1)
    treated = 1.0 / (1.0 + np.exp(-prior.mu))
    slope = (1.0 - detection[0]) / (1.0 - treated)
    free = pm.Flat("logit_treated_sheared")
    tau = pm.Deterministic("logit_treated", prior.mu + free
                           - (gamma0 - spec.detection.intercept.mu) * slope)
    pm.Potential("logit_treated_prior", pm.logp(pm.Normal.dist(prior.mu, prior.sigma), tau))
    return tau


def _reference_evidence(data: ModelData, logit_pi_ref, logit_theta_ref, spec: ModelSpec,
                        gamma0):
    """Survey counts (with design effect) or published rates with their 95% interval."""
    ref = data.reference
    pos = {k: i for i, k in enumerate(data.ref_strata)}
    for measure, target in (("prevalence", logit_pi_ref), ("diagnosed", logit_theta_ref),
                            ("treated", None)):
        rows = ref[ref["measure"] == measure]
        if rows.empty:
            continue
        if measure == "treated":
            tau = _treated_share(spec, data, gamma0)
            target = _logit(pm.math.sigmoid(logit_theta_ref) * pm.math.sigmoid(tau))
        missing = sorted(set(rows["ref_stratum"]) - set(pos))
        if missing:
            raise ValueError(f"{measure} evidence for reference strata without prevalence "
                             f"rows: {missing}")
        idx = np.array([pos[k] for k in rows["ref_stratum"]])
        counts = (rows["kind"] == "counts").to_numpy()
        if counts.any():
            c = rows[counts]
            deff = c["design_effect"].to_numpy()
            y, n = c["y"].to_numpy() / deff, c["n"].to_numpy() / deff
            p = pm.math.sigmoid(target[idx[counts]])
            pm.Potential(f"{measure}_survey", pt.sum(y * pt.log(p) + (n - y) * pt.log1p(-p)))
        if (~counts).any():
            r = rows[~counts]
            sd = (logit(r["upper"].to_numpy()) - logit(r["lower"].to_numpy())) / (2 * 1.959964)
            pm.Normal(f"{measure}_published", mu=target[idx[~counts]], sigma=sd,
                      observed=logit(r["rate"].to_numpy()))


def reference_prior_centre(data: ModelData) -> np.ndarray:
    """Logit of each reference stratum's prevalence evidence (centre of alpha's prior)."""
    ref = data.reference[data.reference["measure"] == "prevalence"].set_index("ref_stratum")
    ref = ref.loc[data.ref_strata]
    rate = np.where(ref["kind"] == "counts", (ref["y"] + 0.5) / (ref["n"] + 1.0), ref["rate"])
    return logit(np.clip(rate.astype(float), 1e-4, 1 - 1e-4))


def eps_start(data: ModelData, sigma_eps: float, detection: float = 0.9) -> np.ndarray:
    """Where each area's standardised prevalence deviation starts sampling: 0, or, for an
    area whose registers hold more than `detection` x its cases expected from the evidence
    (a nursing-home list), its log excess in units of sigma_eps. Under heavy tails such an
    area's deviation belongs far out, and from 0 it must cross a long stretch where the
    gain is small (docs/model.md)."""
    n_areas = len(data.areas)
    expected = np.bincount(data.cell_area, weights=_evidence_cases(data), minlength=n_areas)
    obs_area = np.zeros(len(data.obs_lo), dtype=np.int64)
    obs_area[data.pair_obs] = data.cell_area[data.pair_cell]
    recorded = np.bincount(obs_area, weights=(data.obs_lo + data.obs_hi) / 2.0,
                           minlength=n_areas)
    excess = recorded / np.maximum(detection * expected, 1e-9)
    return np.where(excess > 1.0, np.log(np.maximum(excess, 1.0)) / sigma_eps, 0.0)


def rates_pinned_by_area(data: ModelData, sigma_eps: float) -> bool:
    """Do the registers pin each area's recorded rate more tightly than the prevalence
    deviation's prior spreads it? True where the median area's registered total reaches
    1 / sigma_eps^2 (its Poisson noise on the log scale is then at most sigma_eps)."""
    population, total = _area_totals(data)
    populated = population > 0
    return bool(populated.any() and np.median(total[populated]) >= 1.0 / sigma_eps**2)


def _deviation_shift(spec: ModelSpec, data: ModelData, area_logit, gamma0, covariates_pi):
    """The shift of `_prevalence_deviation`, (u_a - gamma0) / lambda_a + X_a (beta_pi - mu),
    where registers pin every area's rate and the area effects are sampled; else None."""
    if area_logit is None or not rates_pinned_by_area(data, spec.prevalence.sigma_eps):
        return None
    centre = data.x_pi @ np.array([p.mu for p in spec.prevalence.covariates.values()]) \
        if data.x_pi.shape[1] else 0.0
    slope = _ridge_slopes(data, data.cell_area, len(data.areas))
    return (area_logit - gamma0) / slope + covariates_pi - centre


def _prevalence_deviation(spec: ModelSpec, data: ModelData, shift=None) -> pt.TensorVariable:
    """Each area's unexplained prevalence deviation eps_a = sigma_eps z_a, z normal or
    Student t.

    With `shift`, where the registers pin every area's recorded rate, z is sampled along
    the ridges they leave open: z_a = z'_a - shift_a / sigma_eps with z' the sampled
    coordinate, a shear with unit Jacobian; the prior stays on z, so the model is
    unchanged. `shift_a` is (u_a - gamma0) / lambda_a + X_a (beta_pi - mu): the area's
    detection effect over the ridge's slope lambda_a = (1 - pi_a) / (1 - theta_a)
    (d logit pi_a = -d logit theta_a / lambda_a keeps pi_a theta_a fixed), and the
    covariates' departure from their prior means, so that the area's prevalence deviation
    is sampled centred. Without it every area's deviation and detection effect share a
    narrow diagonal that no diagonal mass matrix can follow, and the covariates' effect on
    prevalence one long diagonal with all the deviations (docs/performance.md)."""
    nu, sigma_eps = spec.prevalence.eps_nu, spec.prevalence.sigma_eps
    start = eps_start(data, sigma_eps) if nu is not None else None
    if shift is None:
        z = (pm.Normal("z_eps", 0.0, 1.0, dims="area") if nu is None
             else pm.StudentT("z_eps", nu=nu, mu=0.0, sigma=1.0, dims="area", initval=start))
        return sigma_eps * z
    free = pm.Flat("z_eps_sheared", dims="area", initval=start)
    z = pm.Deterministic("z_eps", free - shift / sigma_eps, dims="area")
    prior = pm.Normal.dist(0.0, 1.0) if nu is None else pm.StudentT.dist(nu=nu, mu=0.0,
                                                                          sigma=1.0)
    pm.Potential("z_eps_prior", pm.logp(prior, z).sum())
    return sigma_eps * z


def build_model(dataset: Dataset, spec: ModelSpec) -> tuple[pm.Model, ModelData]:
    """The PyMC model and its index data."""
    data = prepare(dataset, spec)
    coords = {"area": data.areas, "ref_stratum": data.ref_strata, **data.group_levels,
              "cov_pi": list(spec.prevalence.covariates),
              "cov_theta": list(spec.detection.covariates)}
    with pm.Model(coords=coords) as model:
        # detection terms first: the prevalence intercepts are sampled relative to them
        gamma0 = _normal("gamma0", spec.detection.intercept)
        effects = {attr: _group_effect(attr, effect, len(data.group_levels[attr]))
                   for attr, effect in spec.detection.groups.items()}
        group_term = summed_by_strata(
            data, [(gamma, data.cell_group[attr]) for attr, gamma in effects.items()])
        # Area-level detection: intercept + covariates + area effect. With a centred area
        # effect the intercept and covariates are its mean (hierarchical centring), which
        # removes the ridge between them and the data-pinned area effects. Sampled (not
        # collapsed) area effects come first: the prevalence deviations move with them.
        anchored = spec.detection.area.anchor
        covariate_term, covariates = pt.zeros(len(data.areas)), None
        if data.x_theta.shape[1] and not anchored:
            covariates = (data.x_theta, _coefficients(
                "beta_theta", list(spec.detection.covariates.values()), "cov_theta"))
            covariate_term = data.x_theta @ covariates[1]
        area_logit = None if spec.detection.area.collapse else \
            _area_effect(spec, data, dataset, gamma0, covariate_term, covariates)
        # true prevalence
        alpha_shift, rr_shift = _prevalence_shifts(spec, data, gamma0, effects)
        alpha = _sheared_alpha(spec, data, alpha_shift)
        # per stratum and per area, each summed before it is gathered to the cells
        strata_pi = [(alpha, data.cell_ref)]
        if len(data.offset_groups):
            log_rr = _sheared_offsets(data, rr_shift)
            n_rr = len(data.offset_groups)  # cells without a group take the appended 0
            strata_pi.append((pt.concatenate([log_rr, pt.zeros(1)]),
                              np.where(data.cell_offset_group >= 0, data.cell_offset_group,
                                       n_rr)))
        logit_pi = summed_by_strata(data, strata_pi) + data.cell_offset_fixed
        covariates_pi = pt.zeros(len(data.areas))
        area_pi = []
        if data.x_pi.shape[1]:
            covariates_pi = data.x_pi @ _coefficients(
                "beta_pi", list(spec.prevalence.covariates.values()), "cov_pi")
            area_pi.append(covariates_pi)
        if spec.prevalence.sigma_eps > 0:
            area_pi.append(_prevalence_deviation(spec, data, _deviation_shift(
                spec, data, area_logit, gamma0, covariates_pi)))
        if area_pi:
            logit_pi = logit_pi + to_cells(data, sum(area_pi))
        pi = pm.math.sigmoid(logit_pi)
        rho = _completeness(spec, data)
        order = None if rho is None else completeness_order(data)
        weight = None if rho is None or order is not None else _pair_weights(data, rho)
        concentration = None
        if spec.likelihood.family == "beta_binomial":
            concentration = pt.exp(_normal("log_concentration", spec.likelihood.concentration))

        def register_loglik(area_logit, midpoints: bool = False):
            theta = pm.math.sigmoid(to_cells(data, area_logit) + group_term)
            found = data.population * pi * theta
            if order is not None:
                mu = register_totals(data, found, rho, order)
                return _register_loglik(data, mu, concentration, midpoints, order)
            return _register_loglik(data, obs_totals(data, found, weight), concentration,
                                    midpoints)

        def register_search(area_logit):
            return register_loglik(area_logit, midpoints=True)

        if spec.detection.area.collapse:
            start = _recorded_rate_root(data, pi, group_term)
            mean, sigma = _anchored_prior(spec, data, gamma0, start) if anchored else \
                _area_prior(spec, data, dataset, gamma0, covariate_term)
            areas = _binomial_areas(data, rho, concentration)
            area_logit = laplace_collapse(
                register_loglik, mean, sigma, start, steps=spec.detection.area.newton_steps,
                search=register_search,
                information=_root_information(data, pi, group_term, start),
                cells=None if areas is None else (areas, data.population * pi, group_term))
        else:
            pm.Potential("register", register_loglik(area_logit))
        theta = pm.math.sigmoid(to_cells(data, area_logit) + group_term)
        pm.Deterministic("pi", pi)
        pm.Deterministic("theta", theta)
        # Evidence describes the population of each reference stratum: prevalence is the
        # population-weighted mean of pi, detection the case-weighted mean of theta.
        cases = data.population * pi
        n_ref = len(data.ref_strata)
        pop_ref = np.bincount(data.cell_ref, weights=data.population, minlength=n_ref)
        cases_ref = index_sums(data, cases, data.cell_ref, n_ref)
        found_ref = index_sums(data, cases * theta, data.cell_ref, n_ref)
        _reference_evidence(data, _logit(cases_ref / np.maximum(pop_ref, 1.0)),
                            _logit(found_ref / pt.maximum(cases_ref, 1e-9)), spec, gamma0)
    return model, data


def _binomial_areas(data: ModelData, rho, concentration) -> BinomialAreas | None:
    """The compiled collapse's data where it applies: each area's registers one exact
    binomial total of its cells (no censored counts, completeness weights or
    overdispersion); None elsewhere, where the collapse stays a graph."""
    exact = (data.obs_lo == data.obs_hi).all()
    if not (data.obs_are_areas and rho is None and concentration is None and exact):
        return None
    return BinomialAreas(data.obs_lo, data.obs_population, data.cell_area, len(data.areas))


def _completeness(spec: ModelSpec, data: ModelData) -> pt.TensorVariable | None:
    """Each area's recording completeness rho_a (the share of its people whose attribute
    is recorded); None where no count depends on it."""
    if not data.uses_completeness:
        return None
    assert spec.missing is not None
    mu_rho = _normal("mu_rho", spec.missing.mean)
    sigma_rho = pm.HalfNormal("sigma_rho", spec.missing.sigma)
    # centred: every area has many observations informing its completeness
    logit_rho = pm.Normal("logit_rho", mu_rho, sigma_rho, dims="area")
    return pm.Deterministic("rho", pm.math.sigmoid(logit_rho), dims="area")


def _pair_weights(data: ModelData, rho) -> pt.TensorVariable:
    """Per (observation, cell) pair: 1, rho_a (attribute recorded) or 1 - rho_a (not)."""
    rho_pair = rho[data.cell_area[data.pair_cell]]
    return pt.switch(pt.eq(data.pair_kind, 1), rho_pair,
                     pt.switch(pt.eq(data.pair_kind, 2), 1 - rho_pair, 1.0))


def _area_prior(spec: ModelSpec, data: ModelData, dataset: Dataset, intercept,
                covariate_term) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Mean and sd of independent normal area effects (iid or nested, centred)."""
    area = spec.detection.area
    sigma = pm.HalfNormal("sigma_u", area.sigma)
    if area.type == "iid":
        return intercept + covariate_term, sigma
    parent = _nested_levels(area, data, dataset.levels, intercept, centered=area.centered)
    return parent + covariate_term, sigma


def _anchored_prior(spec: ModelSpec, data: ModelData, intercept, root
                    ) -> tuple[pt.TensorVariable, pt.TensorVariable]:
    """Mean and sd of the collapsed area effects, with every term sampled relative to what
    the registers alone say of it.

    `root` (each area's u matching its register total given prevalence) moves with the
    prevalence and detection intercepts; regressing it on the level's units and the
    detection covariates (a fixed linear map) gives level effects and coefficients that
    move with it, and the sampled coordinates are offsets from those: unit Jacobian. The
    scales are the residuals' root mean square times exp(offset), Jacobian sigma. Priors
    stay on the original parameters, so the model is unchanged; only the geometry is:
    a shift of the intercept, or of one stratum's prevalence, no longer needs every level
    effect, coefficient and scale to move in step."""
    area = spec.detection.area
    priors = list(spec.detection.covariates.values())
    n_cov = data.x_theta.shape[1]
    levels = list(area.levels) if area.type == "nested" else []
    if levels:
        index, n_units = data.level_index[levels[0]], data.level_sizes[levels[0]]
        units = np.zeros((len(data.areas), n_units))
        units[np.arange(len(data.areas)), index] = 1.0
    else:
        index, units = np.zeros(len(data.areas), dtype=int), np.ones((len(data.areas), 1))
    # areas with few registered cases say little of their own effect (their root may lie
    # far out): they take no part in the anchors
    reliable = (_area_totals(data)[1] >= MIN_ANCHOR_COUNT).astype(float)
    projection = runtime_constant(np.linalg.pinv(
        np.column_stack([units, data.x_theta]) * reliable[:, None]) * reliable[None, :])
    root = pt.clip(root, -10.0, 10.0)
    estimate = pt.dot(projection, root)
    fixed = np.array([p.sigma == 0 for p in priors], dtype=bool)
    beta = pt.as_tensor(np.array([p.mu for p in priors]))
    if n_cov and not fixed.all():
        free = np.flatnonzero(~fixed)
        offset = pm.Flat("anchor_beta_theta", shape=len(free))
        beta = pt.set_subtensor(beta[free], estimate[units.shape[1]:][free] + offset)
        mu = np.array([p.mu for p in priors])[free]
        sd = np.array([p.sigma for p in priors])[free]
        pm.Potential("beta_theta_prior", pm.logp(pm.Normal.dist(mu, sd), beta[free]).sum())
        pm.Deterministic("beta_theta", beta, dims="cov_theta")
    covariate_term = pt.dot(data.x_theta, beta) if n_cov else 0.0

    def scale(name: str, residuals, weights=None) -> pt.TensorVariable:
        if weights is None:
            rms = pt.sqrt(pt.mean(residuals**2) + 1e-6)
        else:
            rms = pt.sqrt(pt.sum(weights * residuals**2) / max(weights.sum(), 1.0) + 1e-6)
        log_ratio = pm.Flat(f"anchor_{name}")
        sigma = pm.Deterministic(name, rms * pt.exp(log_ratio))
        pm.Potential(f"{name}_prior", pm.logp(pm.HalfNormal.dist(area.sigma), sigma)
                     + pt.log(sigma))
        return sigma

    if levels:
        offset = pm.Flat(f"anchor_v_{levels[0]}", shape=n_units)
        unit_effect = pm.Deterministic(f"v_{levels[0]}", estimate[:n_units] + offset)
        s_level = scale(f"sigma_level_{levels[0]}", unit_effect - intercept)
        pm.Potential(f"v_{levels[0]}_prior",
                     pm.logp(pm.Normal.dist(intercept, s_level), unit_effect).sum())
        mean = unit_effect[index] + covariate_term
    else:
        mean = intercept + covariate_term + pt.zeros(len(data.areas))
    return mean, scale("sigma_u", root - mean, reliable)


def _area_totals(data: ModelData) -> tuple[np.ndarray, np.ndarray]:
    """Per area: population and registered total (midpoints of censored counts), for
    registers whose counts each lie within one area."""
    n_areas = len(data.areas)
    population = np.bincount(data.cell_area, weights=data.population, minlength=n_areas)
    obs_area = np.zeros(len(data.obs_lo), dtype=int)
    obs_area[data.pair_obs] = data.cell_area[data.pair_cell]
    counted = np.zeros(len(data.obs_lo), dtype=bool)
    counted[data.pair_obs] = True
    total = np.bincount(obs_area[counted], minlength=n_areas,
                        weights=((data.obs_lo + data.obs_hi) / 2.0)[counted])
    return population, total


def _recorded_rate_root(data: ModelData, pi, group_term, steps: int = 1
                        ) -> pt.TensorVariable:
    """Per area, the u that makes the expected recorded total equal the registers' total
    (midpoints of censored counts): Newton steps on the logit scale, where the equation is
    nearly linear. A starting point for the Laplace modes, and what the anchored prior's
    terms are sampled relative to (any smooth function of the other parameters would do
    there: only the geometry depends on it).

    One step: on England hypertension and dementia by PCN the first guess is within 1e-4 of
    the root and one step within 1e-8; four steps cost England's gradient 0.44 ms more
    (1.54 against 1.10)."""
    population, total = _area_totals(data)
    target = np.clip(total / np.maximum(population, 1.0), 1e-6, 1 - 1e-6)
    cases = data.population * pi

    def by_area(values):
        return area_sums(data, values) / np.maximum(population, 1.0)

    share = pt.clip(by_area(cases), 1e-9, 1.0)
    centre = by_area(cases * group_term) / share
    detection = capped_detection(target / share)
    goal = _logit(pt.clip(share * detection, 1e-9, 1 - 1e-9))
    u = _logit(pt.clip(detection, 1e-6, 1 - 1e-6)) - centre
    for _ in range(steps):
        sig = pm.math.sigmoid(to_cells(data, u) + group_term)
        rate = pt.clip(by_area(cases * sig), 1e-9, 1 - 1e-9)
        slope = by_area(cases * sig * (1 - sig)) / (rate * (1 - rate))
        u = u - pt.clip((_logit(rate) - goal) / pt.maximum(slope, 1e-9), -1.0, 1.0)
    return u


def _root_information(data: ModelData, pi, group_term, root) -> pt.TensorVariable:
    """Per area, the information about u at `root` of one binomial count of the area's
    whole population: n (d rate / du)^2 / (rate (1 - rate)). Near zero where the registers
    say little of the area's effect (a handful of people, or a root far out), so that the
    Laplace modes start from the prior there (`laplace_collapse`)."""
    population, _ = _area_totals(data)
    n = np.maximum(population, 1.0)
    sig = pm.math.sigmoid(to_cells(data, root) + group_term)
    cases = data.population * pi
    rate = pt.clip(area_sums(data, cases * sig) / n, 1e-9, 1 - 1e-9)
    return area_sums(data, cases * sig * (1 - sig)) ** 2 / (n * rate * (1 - rate))


def capped_detection(implied, power: float = 8.0):
    """An area's implied detection (registered / expected cases) held smoothly below 1:
    d / (1 + d^k)^(1/k), within 1% of d up to 0.7 and 2% up to 0.8.

    Where the registers reach the expected cases, the root of `_recorded_rate_root` has no
    solution, and as they near it the root's logit grows without bound: d log-odds / d log d
    is 1 / (1 - d). The anchored prior's scales are moments of the roots, so a list near
    its expected cases put a cliff in the density (divergent transitions in the dementia
    fit). Capped, the slope is at most about k."""
    return implied / (1.0 + implied**power) ** (1.0 / power)


def laplace_collapse(loglik, mean, sigma, start, steps: int = 6,
                     search=None, information=None, cells=None) -> pt.TensorVariable:
    """Integrate independent area effects u_a ~ N(mean_a, sigma^2) out of a likelihood that
    is separable by area, with a Laplace approximation per area: Newton steps from `start`
    (at most 1 on the logit scale each) to each mode u*, then
    log L(u*) + log N(u* | mean, sigma) + 0.5 log(2 pi / H), H the negative curvature.
    Adds it as a potential and returns the modes; `u_sd` = H^-1/2 is kept for drawing u.

    `search`, a cheaper likelihood with nearly the same mode (censored counts at their
    midpoints), takes all Newton steps but the last, which uses `loglik` itself: the
    derivatives of each step are part of every gradient, so this saves most of the cost of
    an interval likelihood, while the mode and the marginal stay those of `loglik` to
    second order in the step.

    `information`, the likelihood's curvature at `start` where that is the likelihood's
    own maximum (the registers' root), moves the start to the normal approximation's mode,
    (I start + mean / sigma^2) / (I + 1 / sigma^2): where an area's registers say little
    (51 people and no one on the list), the prior's mean rather than a root far out,
    which the steps of at most 1 would take four steps to leave.

    Also records `laplace_error`, how much one Newton step more would move the potential:
    a deterministic, for the gate's check that the steps converged.

    `cells`, (BinomialAreas, w, g) where each area's registers are one exact binomial total
    of its cells' w expit(g + u): the same steps and formula as compiled loops, each area's
    steps taken until they converge rather than `steps` of them, differentiated implicitly
    at the modes (`gapmodel.area_laplace`); `loglik` and `search` then go unused."""
    precision = 1.0 / sigma**2
    if information is not None:
        start = (information * start + precision * mean) / (information + precision)
    if cells is not None:
        areas, weights, logits = cells
        mean = pt.broadcast_to(mean, (areas.n_areas,))
        terms, u, curvature = areas.collapse(weights, logits, mean, sigma, start)
        pm.Potential("register", pt.sum(terms))
        pm.Deterministic("u_sd", 1.0 / pt.sqrt(curvature), dims="area")
        pm.Deterministic("laplace_error", areas.diagnostics(weights, logits, mean, sigma, u))
        return pm.Deterministic("u", u, dims="area")

    def newton_step(value, u):
        """The step to the mode of the quadratic at u, and the negative curvature there."""
        grad = pt.grad(value, u)
        curvature = pt.minimum(pt.grad(pt.sum(grad), u) - precision, -precision)
        return (grad - (u - mean) * precision) / curvature, curvature

    def marginal(u):
        """The Laplace formula at u (its value at the modes is the potential)."""
        value = loglik(u)
        _, curvature = newton_step(value, u)
        prior = pm.logp(pm.Normal.dist(mean, sigma), u)
        return value + pt.sum(prior + 0.5 * pt.log(2 * np.pi / -curvature)), curvature

    # an area with a zero (or impossible) count has its root far out: start near the prior
    u = pt.clip(start, mean - 4.0, mean + 4.0)
    for step_number in range(steps):
        value = (loglik if search is None or step_number == steps - 1 else search)(u)
        step, _ = newton_step(value, u)
        u = u - pt.clip(step, -1.0, 1.0)  # a trust region: far from the mode, go slowly
    total, curvature = marginal(u)
    pm.Potential("register", total)
    pm.Deterministic("u_sd", 1.0 / pt.sqrt(-curvature), dims="area")
    # how much one step more would move the log density: the gate's check that the steps
    # converged (a deterministic, so never part of the log density or its gradient)
    step, _ = newton_step(loglik(u), u)
    pm.Deterministic("laplace_error",
                     pt.abs(marginal(u - pt.clip(step, -1.0, 1.0))[0] - total))
    return pm.Deterministic("u", u, dims="area")


def _register_loglik(data: ModelData, mu, concentration, midpoints: bool = False,
                     order: np.ndarray | None = None) -> pt.TensorVariable:
    """Total log-likelihood of the register observations given their expected counts
    (in the observations' `order` where given); with `midpoints`, censored counts are
    taken at the middle of their intervals (a cheap stand-in with nearly the same
    maximum, for the Laplace modes' search)."""
    order = np.arange(len(data.obs_lo)) if order is None else order
    n_obs = data.obs_population[order]
    live = n_obs > 0
    p = pt.clip((mu if live.all() else mu[live]) / n_obs[live], 1e-12, 1 - 1e-9)
    lo, hi, n = data.obs_lo[order][live], data.obs_hi[order][live], n_obs[live]
    if midpoints or (lo == hi).all():
        k = (lo + hi) / 2.0
        if concentration is None:
            return pt.sum(binomial_logpmf(k, n, p))
        return pt.sum(beta_binomial_logpmf(k, n, p, concentration))
    return pt.sum(interval_logp(lo, hi, n, p, concentration))
