"""The numbers behind each section of the report, from a version's joint cell draws.

Every area-level quantity is aggregated per draw (sums over an area's cells) before any
summary is taken, so intervals respect the joint posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse, stats

from gapmodel.fit import CellDraws
from gapmodel.summary import PROB, totals

#: Two-sided control limits of the funnel plot and their normal quantiles.
FUNNEL_LIMITS = {"95%": stats.norm.ppf(0.975), "99.8%": stats.norm.ppf(0.999)}
#: An area's recorded total counts as fixed (an observed register total) when its draws
#: vary by less than this (they vary only by float32 rounding when fixed).
FIXED_TOLERANCE = 0.5


def tail_quantiles(values: np.ndarray, prob: float = PROB, axis: int = 0) -> np.ndarray:
    """Lower, median and upper equal-tailed quantiles along `axis` (first axis of result)."""
    tail = (1 - prob) / 2
    return np.nanquantile(values, [tail, 0.5, 1 - tail], axis=axis)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den is 0."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class AreaDraws:
    """Per-draw totals of each area (draw x area, float64) and area populations."""

    areas: pd.Index
    population: np.ndarray
    expected: np.ndarray
    recorded: np.ndarray
    undiagnosed: np.ndarray
    found: np.ndarray
    """sum over the area's cells of N pi theta: the register's expected count."""

    @property
    def n_draws(self) -> int:
        return self.expected.shape[0]

    @property
    def rate(self) -> np.ndarray:
        """Diagnosis rate (recorded / true cases) per draw and area."""
        return safe_ratio(self.recorded, self.expected)


def aggregator(labels: pd.Series) -> tuple[pd.Index, sparse.csr_array]:
    """Area labels in first-seen order and the cell x area 0/1 matrix summing cells."""
    codes, uniques = pd.factorize(labels, sort=False)
    n = len(codes)
    matrix = sparse.csr_array((np.ones(n), (np.arange(n), codes)), shape=(n, len(uniques)))
    return pd.Index(uniques, name=labels.name), matrix


def area_draws(cells: pd.DataFrame, draws: CellDraws, level: str = "area",
               chunk: int = 250) -> AreaDraws:
    """Sum the cell draws over each area of `level` (a column of `cells`), draw by draw."""
    areas, matrix = aggregator(cells[level])
    population = cells["population"].to_numpy(dtype=np.float64)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("expected", "recorded",
                                                        "undiagnosed", "found")}
    for start in range(0, draws.n_draws, chunk):
        rows = slice(start, start + chunk)
        pieces = {k: np.asarray(getattr(draws, k)[rows], dtype=np.float64)
                  for k in ("expected", "recorded", "undiagnosed")}
        pieces["found"] = population[None, :] * np.asarray(draws.pi[rows], np.float64) \
            * np.asarray(draws.theta[rows], np.float64)
        for key, value in pieces.items():
            out[key].append(np.asarray(matrix.T @ value.T).T)
    joined = {k: np.concatenate(v) for k, v in out.items()}
    return AreaDraws(areas=areas, population=np.asarray(matrix.T @ population), **joined)


# -- section 3: headline totals --------------------------------------------------------------

def headline(draws: CellDraws, prob: float = PROB) -> dict[str, dict[str, float]]:
    """Total true cases, recorded, undiagnosed and the diagnosis rate (joint draws)."""
    return totals(draws, prob)


# -- section 4: posterior predictive check ---------------------------------------------------

@dataclass(frozen=True)
class PredictiveCheck:
    """Observed register totals per area against Binomial(N_a, p_a) predictive draws."""

    table: pd.DataFrame
    """per checked area: observed, predictive lower/median/upper, percentile, inside."""
    prob: float
    unchecked: int
    """areas without a fixed register total (cells no register observes, or register
    counts shared with other areas)."""

    @property
    def coverage(self) -> float:
        return float(self.table["inside"].mean()) if len(self.table) else float("nan")


def predictive_check(area: AreaDraws, prob: float = PROB, seed: int = 0) -> PredictiveCheck:
    """Per area, the observed register total against its posterior predictive distribution.

    The observed total is the area's recorded draws summed over its cells, which equals the
    register count (a censored count's midpoint) wherever every cell of the area is
    observed; such totals are fixed across draws. The predictive distribution takes, for
    each draw, Binomial(N_a, sum N pi theta / N_a).
    """
    spread = np.ptp(area.recorded, axis=0)
    fixed = spread <= FIXED_TOLERANCE
    rng = np.random.default_rng(seed)
    n = np.rint(area.population[fixed]).astype(np.int64)
    p = np.clip(safe_ratio(area.found[:, fixed], area.population[None, fixed]), 0, 1)
    predictive = rng.binomial(np.broadcast_to(n, p.shape), np.nan_to_num(p))
    observed = area.recorded[:, fixed].mean(axis=0)
    lo, mid, hi = tail_quantiles(predictive, prob)
    below = (predictive < observed[None, :]).mean(axis=0)
    ties = (predictive == np.rint(observed)[None, :]).mean(axis=0)
    table = pd.DataFrame({
        "area": area.areas[fixed], "population": area.population[fixed],
        "observed": observed, "lower": lo, "median": mid, "upper": hi,
        "percentile": below + ties / 2,
        "inside": (observed >= lo) & (observed <= hi)})
    return PredictiveCheck(table=table, prob=prob, unchecked=int((~fixed).sum()))


# -- sections 5 and 6: area diagnosis rates, funnel --------------------------------------------

def area_rates(area: AreaDraws, prob: float = PROB) -> pd.DataFrame:
    """Per area: expected cases (mean), diagnosis rate median and interval, sorted by rate."""
    lo, mid, hi = tail_quantiles(area.rate, prob)
    table = pd.DataFrame({"area": area.areas, "expected": area.expected.mean(axis=0),
                          "recorded": area.recorded.mean(axis=0),
                          "rate": mid, "lower": lo, "upper": hi})
    return table.sort_values("rate", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class Funnel:
    """Area diagnosis rates against expected cases, with binomial control limits."""

    table: pd.DataFrame
    """per area: expected, rate, z (standardised distance from the overall rate), and
    `outside` (a limit name, or '' inside every limit), sorted by |z| descending."""
    overall: float
    limits: dict[str, float]

    def limit(self, expected: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper control limit at the given expected case counts."""
        half = self.limits[name] * np.sqrt(self.overall * (1 - self.overall)
                                           / np.maximum(expected, 1e-9))
        return np.clip(self.overall - half, 0, 1), np.clip(self.overall + half, 0, 1)

    def count_outside(self, name: str) -> int:
        """Areas outside the named limits (and so outside any narrower one too)."""
        z = self.limits[name]
        return int((self.table["z"].abs() > z).sum())


def funnel(area: AreaDraws, overall: float) -> Funnel:
    """Funnel-plot data: each area's median diagnosis rate against its expected cases."""
    rates = area_rates(area)
    se = np.sqrt(overall * (1 - overall) / np.maximum(rates["expected"].to_numpy(), 1e-9))
    z = (rates["rate"].to_numpy() - overall) / se
    names = sorted(FUNNEL_LIMITS, key=FUNNEL_LIMITS.get, reverse=True)
    outside = [next((n for n in names if abs(v) > FUNNEL_LIMITS[n]), "") for v in z]
    table = rates.assign(z=z, outside=outside)
    table = table.reindex(table["z"].abs().sort_values(ascending=False).index)
    return Funnel(table=table.reset_index(drop=True), overall=overall,
                  limits=dict(FUNNEL_LIMITS))


# -- section 2: sampler diagnostics ----------------------------------------------------------

def diagnostics_rows(table: pd.DataFrame, thresholds: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the ArviZ summary with a flag per check that fails the gate's thresholds."""
    rhat, ess = float(thresholds["rhat"]), float(thresholds["ess"])
    rows = []
    for name, row in table.iterrows():
        r, bulk, tail = (float(row.get(k, math.nan)) for k in ("r_hat", "ess_bulk", "ess_tail"))
        rows.append({
            "name": str(name), "mean": float(row["mean"]), "sd": float(row["sd"]),
            "q5": float(row.get("q5", math.nan)), "q95": float(row.get("q95", math.nan)),
            "r_hat": r, "ess_bulk": bulk, "ess_tail": tail,
            "fail_rhat": not r <= rhat, "fail_bulk": not bulk >= ess,
            "fail_tail": not tail >= ess})
    return rows


def sampler_stats(posterior: Any) -> dict[str, Any] | None:
    """Divergences and E-BFMI per chain from an ArviZ DataTree, None if it has no
    sampler statistics (approximate fits, or a version saved without its posterior)."""
    if posterior is None or "sample_stats" not in posterior.children:
        return None
    stats_ = posterior["sample_stats"]
    out: dict[str, Any] = {"chains": int(stats_.sizes.get("chain", 0))}
    if "diverging" in stats_:
        per_chain = stats_["diverging"].sum("draw").to_numpy().astype(int)
        out["divergences"] = per_chain.tolist()
    if "energy" in stats_:
        energy = stats_["energy"].to_numpy()
        out["ebfmi"] = [float(np.square(np.diff(e)).mean() / np.var(e)) for e in energy]
    return out
