"""Synthetic scenarios with known truth, generated from the design in MODEL.md.

An ICB-like area: GP practices (the base areas) in PCNs in sub-ICBs in one ICB, adults
by age band x sex x ethnicity x deprivation quintile, and a hypertension-like condition.
Everything is drawn from one seed (numpy ``SeedSequence``, one child stream per stage, so
the truth does not depend on how the registers are published):

* **geography**: practices clustered by sub-ICB; adjacency = Delaunay triangulation with
  long edges dropped (the Euclidean minimum spanning tree is always kept), one island
  practice with no neighbours and one small detached cluster (~3% of practices);
* **population** per practice: list size lognormal around 6,000 adults, age structure
  younger in deprived practices, ethnic mix more diverse in deprived practices, and
  residents in 1-3 deprivation quintiles around the practice's own deprivation. Only
  cells with population > 0 are written;
* **covariates** (raw, as published): ``imd_score`` (population-weighted typical IMD score
  of the quintiles) and ``pct_non_white``; the model's ``x_a`` is ``imd_score``
  standardised over practices (mean 0, population SD 1);
* **true prevalence** ``logit pi_c = alpha_k(age, sex) + offset_eth + beta_pi x_a + eps_a``;
* **detection** ``logit theta_c = gamma0 + gamma_age + gamma_sex + gamma_eth + gamma_imd
  + beta_theta x_a + u_a`` with reference levels age 60-79, sex F, the first ethnicity
  (White) and quintile 3 (``gamma_imd`` is linear in the quintile and zero at 3), and
  ``u_a`` BYM2 on the adjacency graph (each component scaled on its own, isolated
  practices unstructured only, centred over practices);
* **counts**: ``D ~ Bin(N, pi)``, ``R ~ Bin(D, theta)``, ``U = D - R``; ethnicity
  recorded for ``K ~ Bin(R, rho_a)`` of the recorded cases;
* **registers** per cell by recorded ethnicity with a "Not stated" row per (practice,
  age, sex, quintile), or per cell, or practice totals (QOF-style), optionally
  suppressed (1-7 as ``*``) and/or rounded;
* **reference evidence**: a survey of the scenario's population by age band x sex
  (``measure=prevalence``): ``y_k ~ Bin(n_k, p_k)`` with ``p_k`` the population-weighted
  mean of the true ``pi`` over the stratum's cells; and, among its cases, the diagnosed
  (``measure=diagnosed``) ``~ Bin(y_k, d_k)`` with ``d_k`` the case-weighted mean of
  ``theta`` (the model reads evidence the same way). The ethnicity offsets come as
  published-style log relative risks in ``reference_map`` (true offset + N(0, 0.1)
  noise, stated SD 0.15).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial import Delaunay
from scipy.special import expit, logit

from gapmodel.data import Dataset, build_dataset

AGE_BANDS = ("18-39", "40-59", "60-79", "80+")
SEXES = ("F", "M")
ETHNICITIES = ("White", "Asian", "Black", "Mixed", "Other")
IMD_QUINTILES = ("1", "2", "3", "4", "5")  # 1 = most deprived
NOT_STATED = "Not stated"
MIN_AREAS = 12
ATTRIBUTES = ["age_band", "sex", "ethnicity", "imd_quintile"]

# Typical IMD 2019 score of a neighbourhood in each quintile (higher = more deprived).
QUINTILE_SCORE = np.array([45.0, 28.0, 20.0, 14.0, 8.0])
AGE_SHARE = np.array([0.37, 0.34, 0.22, 0.07])  # adults by age band
AGE_TILT = np.array([0.6, 0.1, -0.4, -0.8])  # deprived practices are younger
FEMALE_SHARE = np.array([0.50, 0.50, 0.52, 0.60])  # by age band
NON_WHITE_AGE_ODDS = np.array([1.3, 1.0, 0.6, 0.3])  # minority groups are younger
NON_WHITE_SPLIT = {"Asian": 0.50, "Black": 0.22, "Mixed": 0.15, "Other": 0.13}
PLACES = ("Abbey", "Beech", "Bridge", "Castle", "Church", "Elm", "Forest", "Grove",
          "Hill", "Kings", "Lake", "Manor", "Market", "Meadow", "Mill", "Oak", "Park",
          "Priory", "Queens", "River", "Station", "Valley", "Well", "Willow")
KINDS = ("Surgery", "Medical Centre", "Health Centre", "Medical Practice", "Family Practice")


@dataclass(frozen=True)
class Effects:
    """The generating parameters; the defaults are hypertension-like.

    Probabilities are given on the natural scale where that is easier to read
    (``prevalence`` per age-sex reference stratum, ``detection``: reference-group
    detection); everything else is on the logit scale. Effects of groups missing from a
    mapping are 0.
    """

    prevalence: Mapping[str, float] = field(default_factory=lambda: {
        "18-39|F": 0.045, "18-39|M": 0.055, "40-59|F": 0.22, "40-59|M": 0.28,
        "60-79|F": 0.50, "60-79|M": 0.50, "80+|F": 0.68, "80+|M": 0.68})
    offset_eth: Mapping[str, float] = field(default_factory=lambda: {
        "White": 0.0, "Asian": 0.1, "Black": 0.4, "Mixed": 0.0, "Other": 0.0})
    beta_pi: float = 0.1
    sigma_eps: float = 0.1
    detection: float = 0.7  # gamma0 = logit(detection)
    gamma_age: Mapping[str, float] = field(default_factory=lambda: {
        "18-39": -0.8, "40-59": -0.35, "60-79": 0.0, "80+": 0.15})
    gamma_sex: Mapping[str, float] = field(default_factory=lambda: {"F": 0.0, "M": -0.15})
    gamma_eth: Mapping[str, float] = field(default_factory=lambda: {
        "White": 0.0, "Asian": -0.3, "Black": -0.5, "Mixed": -0.2, "Other": -0.2})
    imd_gap: float = 0.4  # gamma_imd(5) - gamma_imd(1), linear in quintile, 0 at quintile 3
    beta_theta: float = -0.1
    sigma_u: float = 0.3
    bym2_mix: float = 0.6
    recording: float = 0.9  # median ethnicity recording completeness
    recording_sd: float = 0.5  # SD of logit(rho_a)
    log_rr_noise_sd: float = 0.1  # error of the published ethnicity log relative risks
    log_rr_sd: float = 0.15  # the uncertainty the publication states
    survey_n: tuple[int, int] = (300, 700)  # survey sample size range per reference stratum


@dataclass(frozen=True, eq=False)
class Truth:
    """The known truth behind a scenario.

    * ``parameters``: every true parameter by name (JSON-serialisable);
    * ``cells``: aligned row for row with ``dataset.cells``: ``area, stratum, population,
      pi, theta, expected (N pi), cases, recorded, undiagnosed, expected_undiagnosed
      (N pi (1 - theta)), recorded_known`` (recorded cases with ethnicity recorded);
    * ``areas``: per practice ``area, eps, u, rho_recording, x_imd, deprivation`` (the
      latent deprivation, standardised, higher = more deprived), ``component,
      u_structured, u_unstructured`` (the BYM2 parts before scaling by sigma_u).
    """

    parameters: dict[str, Any]
    cells: pd.DataFrame
    areas: pd.DataFrame

    def write(self, directory: str | Path) -> Path:
        """Write ``cells.csv``, ``areas.csv`` and ``parameters.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.cells.to_csv(directory / "cells.csv", index=False, lineterminator="\n")
        self.areas.to_csv(directory / "areas.csv", index=False, lineterminator="\n")
        text = json.dumps(self.parameters, indent=2)
        (directory / "parameters.json").write_text(text + "\n", encoding="utf-8")
        return directory


@dataclass(frozen=True, eq=False)
class Scenario:
    """A validated synthetic dataset and the truth it was drawn from."""

    dataset: Dataset
    truth: Truth

    def write(self, directory: str | Path, fmt: Literal["csv", "parquet"] = "csv") -> Path:
        """Write the dataset (``Dataset.write``) and the truth into ``directory/truth``."""
        directory = self.dataset.write(directory, fmt=fmt)
        self.truth.write(directory / "truth")
        return directory

    def true_counts(self) -> pd.Series:
        """The true count behind each register observation (before any censoring).

        Aligned with ``dataset.observations``: recorded cases for cells and totals,
        those with ethnicity recorded for per-ethnicity rows of a register with a
        "not stated" value, and the rest for its "not stated" rows.
        """
        obs, pairs, cells = (self.dataset.observations, self.dataset.obs_cells,
                             self.truth.cells)
        with_ns = {stem for stem, options in self.dataset.manifest.registers.items()
                   if options.not_stated}
        recorded = cells["recorded"].to_numpy()
        known = cells["recorded_known"].to_numpy()
        position = pairs["obs"].to_numpy()
        cell = pairs["cell"].to_numpy()
        not_stated = (obs["incomplete"] != "").to_numpy()[position]
        split = obs["register"].isin(with_ns).to_numpy()[position]
        value = np.where(not_stated, recorded[cell] - known[cell],
                         np.where(split, known[cell], recorded[cell]))
        totals = np.bincount(position, weights=value, minlength=len(obs))
        return pd.Series(totals.astype(np.int64), index=obs.index, name="true_count")


# -- geography ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geography:
    areas: pd.DataFrame  # area, name, pcn, sub_icb, icb
    xy: np.ndarray  # (A, 2) locations
    edges: np.ndarray  # (E, 2) indices, i < j
    island: int
    detached: np.ndarray  # indices of the detached cluster


def _geography(n_areas: int, rng: np.random.Generator) -> _Geography:
    """Practices, their PCNs and sub-ICBs, locations and the adjacency graph."""
    n_detached = max(2, round(0.03 * n_areas))
    n_main = n_areas - 1 - n_detached
    n_sub = max(2, round(n_areas / 70))
    radius = max(1.0, np.sqrt(n_sub) / 2)  # sub-ICB centres on a ring
    angle = 2 * np.pi * np.arange(n_sub) / n_sub + rng.uniform(-0.3, 0.3, n_sub)
    centres = radius * np.column_stack([np.cos(angle), np.sin(angle)])
    sizes = np.diff(np.round(np.linspace(0, n_main, n_sub + 1)).astype(int))
    xy, sub, pcn, group = [], [], [], []
    next_pcn = 0
    for s, size in enumerate(sizes):
        points = centres[s] + rng.normal(0.0, 0.5, (size, 2))
        centred = points - points.mean(axis=0)
        order = np.argsort(np.arctan2(centred[:, 1], centred[:, 0]))
        for chunk in np.array_split(order, max(1, round(size / 7))):
            xy.append(points[chunk])
            sub += [s] * len(chunk)
            pcn += [next_pcn] * len(chunk)
            next_pcn += 1
    group += [0] * n_main
    # The detached cluster: its own PCN in the nearest sub-ICB.
    direction = angle[0] + np.pi / n_sub
    spot = (radius + 1.8) * np.array([np.cos(direction), np.sin(direction)])
    xy.append(spot + rng.normal(0.0, 0.12, (n_detached, 2)))
    sub += [int(np.argmin(np.linalg.norm(centres - spot, axis=1)))] * n_detached
    pcn += [next_pcn] * n_detached
    group += [1] * n_detached
    # The island: one practice far out, in the PCN whose centroid is nearest.
    island_xy = -(radius + 1.8) * np.array([np.cos(direction), np.sin(direction)])
    xy.append(island_xy[None, :])
    main_xy = np.concatenate(xy[:-2])
    main_pcn = np.array(pcn[:n_main])
    centroids = np.array([main_xy[main_pcn == p].mean(axis=0) for p in range(next_pcn)])
    nearest = int(np.argmin(np.linalg.norm(centroids - island_xy, axis=1)))
    sub.append(sub[int(np.flatnonzero(main_pcn == nearest)[0])])
    pcn.append(nearest)
    group.append(2)
    xy_all = np.concatenate(xy)
    order = np.lexsort((np.arange(n_areas), np.array(group) == 2, np.array(pcn)))
    xy_all, sub_a, pcn_a, group_a = (xy_all[order], np.array(sub)[order],
                                     np.array(pcn)[order], np.array(group)[order])
    edges = np.concatenate([_group_edges(xy_all, np.flatnonzero(group_a == g))
                            for g in (0, 1)])
    return _Geography(areas=_area_table(sub_a, pcn_a), xy=xy_all, edges=edges,
                      island=int(np.flatnonzero(group_a == 2)[0]),
                      detached=np.flatnonzero(group_a == 1))


def _area_table(sub: np.ndarray, pcn: np.ndarray) -> pd.DataFrame:
    """Codes and names: practices P0001.., PCNs PCN01.., sub-ICBs SUB01.., one ICB."""
    n = len(sub)
    pcn_rank = {p: i for i, p in enumerate(dict.fromkeys(pcn.tolist()))}
    sub_rank = {s: i for i, s in enumerate(dict.fromkeys(sub.tolist()))}
    width = max(4, len(str(n)))
    pcn_width = max(2, len(str(len(pcn_rank))))
    cycle = len(PLACES) * len(KINDS)
    names = [f"{PLACES[i % len(PLACES)]} {KINDS[(i // len(PLACES)) % len(KINDS)]}"
             + (f" {i // cycle + 1}" if i >= cycle else "") for i in range(n)]
    return pd.DataFrame({
        "area": [f"P{i + 1:0{width}d}" for i in range(n)],
        "name": names,
        "pcn": [f"PCN{pcn_rank[p] + 1:0{pcn_width}d}" for p in pcn.tolist()],
        "sub_icb": [f"SUB{sub_rank[s] + 1:02d}" for s in sub.tolist()],
        "icb": "ICB01",
    })


def _group_edges(xy: np.ndarray, members: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Delaunay edges among `members` without long ones, keeping the spanning tree."""
    if len(members) < 3:
        return members[None, :2] if len(members) == 2 else np.empty((0, 2), dtype=int)
    points = xy[members]
    simplices = Delaunay(points).simplices
    local = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]])
    local = np.unique(np.sort(local, axis=1), axis=0)
    length = np.linalg.norm(points[local[:, 0]] - points[local[:, 1]], axis=1)
    n = len(members)
    tree = minimum_spanning_tree(sp.coo_matrix((length, (local[:, 0], local[:, 1])),
                                               shape=(n, n))).tocoo()
    in_tree = sp.coo_matrix((np.ones(tree.nnz), (np.minimum(tree.row, tree.col),
                                                 np.maximum(tree.row, tree.col))),
                            shape=(n, n)).tocsr()
    keep = (length <= factor * np.median(length)) \
        | (np.asarray(in_tree[local[:, 0], local[:, 1]]).ravel() > 0)
    return np.sort(members[local[keep]], axis=1)


def components(n: int, edges: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of an undirected graph given as index pairs."""
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels


# -- population and covariates -----------------------------------------------------------


def _smooth_field(xy: np.ndarray, rng: np.random.Generator, lengthscale: float = 0.6,
                  features: int = 64) -> np.ndarray:
    """A smooth random field (random Fourier features of a squared-exponential GP)."""
    w = rng.normal(0.0, 1.0 / lengthscale, (features, 2))
    b = rng.uniform(0.0, 2 * np.pi, features)
    return np.sqrt(2.0 / features) * np.cos(xy @ w.T + b).sum(axis=1)


def _standardise(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def _populations(geo: _Geography, ethnicities: Sequence[str],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Counts (A, age, sex, ethnicity, quintile) and each practice's deprivation z."""
    n = len(geo.xy)
    z = _standardise(0.8 * _smooth_field(geo.xy, rng) + 0.6 * rng.standard_normal(n))
    list_size = np.clip(np.round(np.exp(rng.normal(np.log(6000), 0.5, n))), 800, 40000)
    tilt = 0.25 * z + rng.normal(0.0, 0.25, n)
    age = np.log(AGE_SHARE) + tilt[:, None] * AGE_TILT
    age = np.exp(age) / np.exp(age).sum(axis=1, keepdims=True)
    sex = np.column_stack([FEMALE_SHARE, 1 - FEMALE_SHARE])
    non_white = expit(-1.6 + 0.9 * z + rng.normal(0.0, 0.6, n))
    non_white = expit(logit(non_white)[:, None] + np.log(NON_WHITE_AGE_ODDS))  # (A, age)
    split = np.array([NON_WHITE_SPLIT.get(e, 1.0) for e in ethnicities[1:]])
    split = rng.dirichlet(30 * split / split.sum(), n)  # (A, E-1)
    eth = np.concatenate([(1 - non_white)[:, :, None],
                          non_white[:, :, None] * split[:, None, :]], axis=2)
    centre = np.clip(3 - 1.4 * z, 1, 5)
    imd = np.exp(-((np.arange(1, 6) - centre[:, None]) ** 2) / (2 * 0.7**2))
    imd /= imd.sum(axis=1, keepdims=True)
    imd = np.where(imd < 0.05, 0.0, imd)
    imd /= imd.sum(axis=1, keepdims=True)
    share = (age[:, :, None, None, None] * sex[None, :, :, None, None]
             * eth[:, :, None, :, None] * imd[:, None, None, None, :])
    flat = share.reshape(n, -1)
    counts = rng.multinomial(list_size.astype(np.int64), flat / flat.sum(axis=1, keepdims=True))
    return counts.reshape(share.shape), z


def _covariates(counts: np.ndarray) -> pd.DataFrame:
    """Raw practice covariates from the population: imd_score and pct_non_white."""
    total = counts.sum(axis=(1, 2, 3, 4))
    by_quintile = counts.sum(axis=(1, 2, 3))
    white = counts[:, :, :, 0, :].sum(axis=(1, 2, 3))
    return pd.DataFrame({
        "imd_score": np.round(by_quintile @ QUINTILE_SCORE / total, 2),
        "pct_non_white": np.round(100 * (1 - white / total), 2),
    })


# -- area effects ------------------------------------------------------------------------


def _bym2(n: int, edges: np.ndarray, sigma: float, mix: float,
          rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, float]]:
    """BYM2 area effects: u = sigma (sqrt(mix) s + sqrt(1 - mix) v), centred.

    ``s`` is an ICAR draw per connected component (sum to zero within it), scaled so the
    geometric mean of its marginal variances is 1; isolated areas have ``s = 0``.
    """
    count, labels = components(n, edges)
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    graph = (graph + graph.T).tocsr()
    structured = np.zeros(n)
    scales: dict[str, float] = {}
    for label in range(count):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        w = graph[members][:, members].toarray()
        lam, vec = np.linalg.eigh(np.diag(w.sum(axis=1)) - w)
        keep = lam > 1e-9 * lam.max()
        variance = (vec[:, keep] ** 2 / lam[keep]).sum(axis=1)  # diag of Q^+
        scale = float(np.exp(np.mean(np.log(variance))))
        draw = vec[:, keep] @ (rng.standard_normal(int(keep.sum())) / np.sqrt(lam[keep]))
        structured[members] = draw / np.sqrt(scale)
        scales[str(label)] = scale
    unstructured = rng.standard_normal(n)
    u = sigma * (np.sqrt(mix) * structured + np.sqrt(1 - mix) * unstructured)
    frame = pd.DataFrame({"u": u - u.mean(), "component": labels,
                          "u_structured": structured, "u_unstructured": unstructured})
    return frame, scales


# -- cells, counts and publication -------------------------------------------------------


def _strata(ethnicities: Sequence[str]) -> pd.DataFrame:
    """Every age x sex x ethnicity x quintile combination, codes like 18-39|F|White|1."""
    index = pd.MultiIndex.from_product([AGE_BANDS, SEXES, ethnicities, IMD_QUINTILES],
                                       names=ATTRIBUTES)
    frame = index.to_frame(index=False)
    frame.insert(0, "stratum", frame[ATTRIBUTES].agg("|".join, axis=1))
    return frame


def _gamma_imd(effects: Effects) -> dict[str, float]:
    """Linear in the quintile, 0 at quintile 3; quintile 5 minus quintile 1 = imd_gap."""
    return {q: effects.imd_gap / 4 * (int(q) - 3) for q in IMD_QUINTILES}


def _cells(strata: pd.DataFrame, areas: pd.DataFrame, counts: np.ndarray) -> pd.DataFrame:
    """Long cell table (areas order, then strata order) of the non-empty cells."""
    flat = counts.reshape(len(areas), -1)
    area_idx, stratum_idx = np.nonzero(flat)
    cells = strata.iloc[stratum_idx].reset_index(drop=True)
    cells.insert(0, "area", areas["area"].to_numpy()[area_idx])
    cells["population"] = flat[area_idx, stratum_idx].astype(np.int64)
    cells["_area"] = area_idx
    return cells


def _cell_truth(cells: pd.DataFrame, area: pd.DataFrame, effects: Effects,
                rng: np.random.Generator) -> pd.DataFrame:
    """True prevalence and detection per cell, then cases, recorded and recording."""
    a = cells["_area"].to_numpy()
    ref = cells["age_band"] + "|" + cells["sex"]
    alpha = logit(ref.map(dict(effects.prevalence)).to_numpy(dtype=float))
    eth = cells["ethnicity"].map(lambda e: effects.offset_eth.get(e, 0.0)).to_numpy(float)
    x = area["x_imd"].to_numpy()[a]
    pi = expit(alpha + eth + effects.beta_pi * x + area["eps"].to_numpy()[a])
    gamma_imd = _gamma_imd(effects)
    lin = (logit(effects.detection)
           + cells["age_band"].map(lambda v: effects.gamma_age.get(v, 0.0)).to_numpy(float)
           + cells["sex"].map(lambda v: effects.gamma_sex.get(v, 0.0)).to_numpy(float)
           + cells["ethnicity"].map(lambda v: effects.gamma_eth.get(v, 0.0)).to_numpy(float)
           + cells["imd_quintile"].map(gamma_imd).to_numpy(float)
           + effects.beta_theta * x + area["u"].to_numpy()[a])
    theta = expit(lin)
    n = cells["population"].to_numpy()
    cases = rng.binomial(n, pi)
    recorded = rng.binomial(cases, theta)
    known = rng.binomial(recorded, area["rho_recording"].to_numpy()[a])
    return pd.DataFrame({
        "area": cells["area"], "stratum": cells["stratum"], "population": n,
        "pi": pi, "theta": theta, "expected": n * pi, "cases": cases,
        "recorded": recorded, "undiagnosed": cases - recorded,
        "expected_undiagnosed": n * pi * (1 - theta), "recorded_known": known})


def publish(counts: np.ndarray, *, suppress: bool = False, round_to: int | None = None,
            suppressed: tuple[int, int] = (1, 7)) -> np.ndarray:
    """Counts as published text: ``*`` inside the suppressed range, else rounded.

    Rounding goes to the nearest multiple of ``round_to`` (ties up), which is what the
    dataset format's interval ``[x - floor(b/2), x + ceil(b/2) - 1]`` undoes.
    """
    values = np.asarray(counts, dtype=np.int64)
    shown = values if not round_to else round_to * ((values + round_to // 2) // round_to)
    text = shown.astype(str).astype(object)
    if suppress:
        text[(values >= suppressed[0]) & (values <= suppressed[1])] = "*"
    return text


def _register(cells: pd.DataFrame, truth: pd.DataFrame, form: str, not_stated: bool,
              suppress: bool, round_to: int | None) -> pd.DataFrame:
    """The register table in the file schema."""
    if form == "totals":
        totals = truth.groupby("area", sort=False)["recorded"].sum()
        frame = pd.DataFrame({"area": totals.index, "count": totals.to_numpy()})
    elif not not_stated:
        frame = cells[["area", *ATTRIBUTES]].assign(count=truth["recorded"].to_numpy())
    else:
        keys = ["area", "age_band", "sex", "imd_quintile"]
        group = cells.groupby(keys, sort=False).ngroup().to_numpy()
        known = cells[["area", *ATTRIBUTES]].assign(count=truth["recorded_known"].to_numpy(),
                                                    _group=group, _ns=0)
        missing = (truth["recorded"] - truth["recorded_known"]).to_numpy()
        rest = known.assign(count=missing).groupby("_group", sort=True).agg(
            {**{k: "first" for k in keys}, "count": "sum"}).reset_index()
        rest = rest.assign(ethnicity=NOT_STATED, _ns=1)
        frame = pd.concat([known, rest[known.columns]], ignore_index=True)
        frame = frame.sort_values(["_group", "_ns"], kind="stable").drop(columns=["_group",
                                                                                 "_ns"])
        frame = frame.reset_index(drop=True)
    frame["count"] = publish(frame["count"].to_numpy(), suppress=suppress, round_to=round_to)
    return frame


# -- reference evidence ------------------------------------------------------------------


def _reference(effects: Effects, truth: pd.DataFrame, rng: np.random.Generator
               ) -> tuple[pd.DataFrame, dict]:
    """Survey counts by age band x sex, sampling the scenario's own population: the
    prevalence of each stratum is the population-weighted mean of the cells' true pi,
    and the diagnosed share among its cases the case-weighted mean of theta."""
    ref = truth["stratum"].str.split("|").str[:2].str.join("|")
    n_pi = truth["population"] * truth["pi"]
    by_ref = pd.DataFrame({"ref": ref, "n": truth["population"], "cases": n_pi,
                           "found": n_pi * truth["theta"]}).groupby("ref", sort=False).sum()
    rows, out = [], {}
    for age in AGE_BANDS:
        for sex in SEXES:
            key = f"{age}|{sex}"
            p_prev = float(by_ref.loc[key, "cases"] / by_ref.loc[key, "n"])
            p_diag = float(by_ref.loc[key, "found"] / by_ref.loc[key, "cases"])
            n = int(rng.integers(effects.survey_n[0], effects.survey_n[1] + 1))
            y = int(rng.binomial(n, p_prev))
            rows.append({"ref_stratum": key, "measure": "prevalence", "y": y, "n": n,
                         "source": "simulated survey of the scenario's population"})
            if y > 0:
                rows.append({"ref_stratum": key, "measure": "diagnosed",
                             "y": int(rng.binomial(y, p_diag)), "n": y,
                             "source": "simulated survey of the scenario's population"})
            out[key] = {"prevalence": p_prev, "diagnosed": p_diag}
    return pd.DataFrame(rows), out


def _reference_map(strata: pd.DataFrame, effects: Effects, ethnicities: Sequence[str],
                   rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, float]]:
    """Each stratum to its age-sex reference stratum, with a published-style log RR."""
    published = {e: 0.0 if i == 0 else round(float(effects.offset_eth.get(e, 0.0)
                                                   + rng.normal(0.0, effects.log_rr_noise_sd)), 4)
                 for i, e in enumerate(ethnicities)}
    reference = strata["ethnicity"] == ethnicities[0]
    frame = pd.DataFrame({
        "stratum": strata["stratum"],
        "ref_stratum": strata["age_band"] + "|" + strata["sex"],
        "log_rr_mean": strata["ethnicity"].map(published),
        "log_rr_sd": np.where(reference, 0.0, effects.log_rr_sd)})
    return frame, published


# -- the scenario ------------------------------------------------------------------------


def simulate(n_areas: int = 300, seed: int = 0, *, register: str = "cells",
             not_stated: bool = True, suppress: bool = False, round_to: int | None = None,
             ethnicities: Sequence[str] = ETHNICITIES, effects: Effects | None = None,
             name: str = "synthetic_icb") -> Scenario:
    """Simulate an ICB-like scenario with known truth (see the module docstring).

    ``register``: ``"cells"`` (per cell; by recorded ethnicity with "Not stated" rows
    unless ``not_stated=False``) or ``"totals"`` (one count per practice). ``suppress``
    publishes 1-7 as ``*``; ``round_to`` rounds published counts. ``ethnicities``: the
    first is the reference group. The truth depends only on ``n_areas``, ``seed``,
    ``ethnicities`` and ``effects``, never on how the registers are published.
    """
    _check_arguments(n_areas, register, round_to, ethnicities)
    effects = effects or Effects()
    ethnicities = tuple(ethnicities)
    geo_rng, pop_rng, area_rng, count_rng, ref_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))

    geo = _geography(n_areas, geo_rng)
    n_components, _ = components(n_areas, geo.edges)
    if n_components != 3:
        raise RuntimeError(f"expected 3 graph components, got {n_components}")
    counts, deprivation = _populations(geo, ethnicities, pop_rng)
    covariates = _covariates(counts)
    imd = covariates["imd_score"].to_numpy()
    area, scales = _area_effects(geo, imd, effects, area_rng)
    strata = _strata(ethnicities)
    cells = _cells(strata, geo.areas, counts)
    truth_cells = _cell_truth(cells, area, effects, count_rng)
    reference, reference_truth = _reference(effects, truth_cells, ref_rng)
    reference_map, published = _reference_map(strata, effects, ethnicities, ref_rng)

    codes = geo.areas["area"].to_numpy()
    tables = {
        "strata": strata, "areas": geo.areas,
        "population": cells[["area", "stratum", "population"]],
        "register": _register(cells, truth_cells, register, not_stated, suppress, round_to),
        "reference": reference, "reference_map": reference_map,
        "covariates": pd.concat([geo.areas[["area"]], covariates], axis=1),
        "adjacency": pd.DataFrame({"area1": codes[geo.edges[:, 0]],
                                   "area2": codes[geo.edges[:, 1]]}),
    }
    notes = [
        f"synthetic data from gapmodel.simulate (seed {seed}): every count is simulated",
        f"{counts.size - len(cells)} of {counts.size} possible cells (practice x stratum) "
        "have no population and were not written",
        f"practice {codes[geo.island]} is an island (no neighbours); {len(geo.detached)} "
        "practices form a separate adjacency component",
    ]
    manifest = _manifest(name, seed, n_areas, register, not_stated, round_to)
    dataset = build_dataset(tables, manifest, notes=notes)
    aligned = dataset.cells[["area", "stratum"]].to_numpy()
    if not np.array_equal(aligned, truth_cells[["area", "stratum"]].to_numpy()):
        raise RuntimeError("truth cells are not aligned with dataset.cells")

    parameters = _parameters(effects, ethnicities, imd, scales, reference_truth, published)
    parameters["scenario"] = {
        "seed": seed, "n_areas": n_areas, "register": register, "not_stated": not_stated,
        "suppress": suppress, "round_to": round_to, "ethnicities": list(ethnicities),
        "island": str(codes[geo.island]), "detached": codes[geo.detached].tolist()}
    truth_areas = area.assign(area=codes, deprivation=deprivation)[
        ["area", "eps", "u", "rho_recording", "x_imd", "deprivation", "component",
         "u_structured", "u_unstructured"]]
    return Scenario(dataset=dataset,
                    truth=Truth(parameters=parameters, cells=truth_cells, areas=truth_areas))


def _check_arguments(n_areas: int, register: str, round_to: int | None,
                     ethnicities: Sequence[str]) -> None:
    if n_areas < MIN_AREAS:
        raise ValueError(f"n_areas must be at least {MIN_AREAS}, got {n_areas}")
    if register not in ("cells", "totals"):
        raise ValueError(f"register must be 'cells' or 'totals', got {register!r}")
    if round_to is not None and round_to < 2:
        raise ValueError(f"round_to must be at least 2, got {round_to}")
    if len(ethnicities) < 2 or len(set(ethnicities)) != len(ethnicities) \
            or NOT_STATED in ethnicities:
        raise ValueError(f"ethnicities: at least two distinct values, not '{NOT_STATED}'")


def _manifest(name: str, seed: int, n_areas: int, register: str, not_stated: bool,
              round_to: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if register == "cells" and not_stated:
        options["not_stated"] = {"ethnicity": NOT_STATED}
    if round_to:
        options["rounding"] = int(round_to)
    return {
        "name": name, "condition": "hypertension", "area_level": "practice",
        "description": f"Synthetic ICB-like scenario (gapmodel.simulate, seed {seed}, "
                       f"{n_areas} practices); the truth is in truth/ when written.",
        "registers": {"register": options} if options else {},
    }


def _area_effects(geo: _Geography, imd: np.ndarray, effects: Effects,
                  rng: np.random.Generator) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per practice: eps (prevalence), u (BYM2 detection), rho (recording), x_imd."""
    n = len(geo.xy)
    frame, scales = _bym2(n, geo.edges, effects.sigma_u, effects.bym2_mix, rng)
    frame["eps"] = rng.normal(0.0, effects.sigma_eps, n)
    frame["rho_recording"] = expit(logit(effects.recording)
                                   + rng.normal(0.0, effects.recording_sd, n))
    frame["x_imd"] = _standardise(imd)
    return frame, scales


def _parameters(effects: Effects, ethnicities: Sequence[str], imd: np.ndarray,
                scales: dict[str, float], reference: dict, published: dict[str, float]
                ) -> dict[str, Any]:
    """Every true parameter by name, JSON-serialisable."""
    raw = asdict(effects)
    return {
        "alpha": {k: float(logit(v)) for k, v in effects.prevalence.items()},
        "offset_eth": {e: float(effects.offset_eth.get(e, 0.0)) for e in ethnicities},
        "beta_pi": effects.beta_pi,
        "sigma_eps": effects.sigma_eps,
        "gamma0": float(logit(effects.detection)),
        "gamma_age": {a: float(effects.gamma_age.get(a, 0.0)) for a in AGE_BANDS},
        "gamma_sex": {s: float(effects.gamma_sex.get(s, 0.0)) for s in SEXES},
        "gamma_eth": {e: float(effects.gamma_eth.get(e, 0.0)) for e in ethnicities},
        "gamma_imd": _gamma_imd(effects),
        "beta_theta": effects.beta_theta,
        "sigma_u": effects.sigma_u,
        "bym2_mix": effects.bym2_mix,
        "bym2_scale": scales,
        "rho_logit_mean": float(logit(effects.recording)),
        "rho_logit_sd": effects.recording_sd,
        "covariate_standardisation": {"imd_score": {"mean": float(imd.mean()),
                                                    "sd": float(imd.std())}},
        "reference_levels": {"age_band": "60-79", "sex": "F", "ethnicity": ethnicities[0],
                             "imd_quintile": "3", "x": 0.0, "eps": 0.0, "u": 0.0},
        "reference_truth": reference,
        "log_rr_published": published,
        "log_rr_sd": effects.log_rr_sd,
        "effects": {k: (dict(v) if isinstance(v, Mapping) else
                        list(v) if isinstance(v, tuple) else v) for k, v in raw.items()},
    }


def load_truth(directory: str | Path) -> Truth:
    """Read the truth written by ``Scenario.write`` (the scenario or its truth folder)."""
    directory = Path(directory)
    if not (directory / "parameters.json").exists():
        directory = directory / "truth"
    text = {"area": str, "stratum": str}
    cells = pd.read_csv(directory / "cells.csv", dtype=text, keep_default_na=False)
    areas = pd.read_csv(directory / "areas.csv", dtype={"area": str}, keep_default_na=False)
    parameters = json.loads((directory / "parameters.json").read_text(encoding="utf-8"))
    return Truth(parameters=parameters, cells=cells, areas=areas)


def default_scenario() -> Scenario:
    """The embedded default: an ICB-like area of 300 practices, seed 0, per-cell registers."""
    return simulate()
