"""Hand-built cells and joint draws for the posterior product tests (no fitting)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from gapmodel.fit import CellDraws
from gapmodel.posterior import PosteriorView

AREAS = {"A1": "N1", "A2": "N1", "A3": "N1", "A4": "N2", "A5": "N2", "A6": "N2"}
STRATA = list(itertools.product(["40-59", "60-79"], ["F", "M"], ["White", "Black"]))


def cells_table(drop: tuple[int, ...] = (5, 22)) -> pd.DataFrame:
    """6 areas in 2 PCNs x 8 strata (age band x sex x ethnicity), a few cells absent."""
    rows = [{"area": area, "stratum": "|".join(s), "age_band": s[0], "sex": s[1],
             "ethnicity": s[2], "pcn": pcn, "icb": "I1"}
            for area, pcn in AREAS.items() for s in STRATA]
    frame = pd.DataFrame(rows).drop(index=list(drop)).reset_index(drop=True)
    rng = np.random.default_rng(7)
    frame.insert(2, "population", rng.integers(20, 400, len(frame)))
    return frame


def random_draws(cells: pd.DataFrame, n_draws: int = 300, seed: int = 0) -> CellDraws:
    """Joint draws shaped like `gapmodel.fit.derive`'s: recorded near a fixed share of
    the population, undiagnosed binomial among the rest, expected their sum."""
    rng = np.random.default_rng(seed)
    n = cells["population"].to_numpy()
    pi = rng.beta(4, 8, (n_draws, len(n))) * rng.uniform(0.5, 1.5, len(n))
    theta = rng.beta(6, 3, (n_draws, len(n)))
    recorded = np.round(n * 0.25 * rng.uniform(0.5, 1.0, len(n))) \
        + rng.normal(0, 0.01, (n_draws, len(n)))
    q = np.clip(pi * (1 - theta) / (1 - pi * theta), 0, 1)
    undiagnosed = rng.binomial(np.rint(n - recorded).astype(np.int64), q).astype(float)
    f32 = np.float32
    return CellDraws(expected=(recorded + undiagnosed).astype(f32),
                     recorded=recorded.astype(f32), undiagnosed=undiagnosed.astype(f32),
                     pi=np.clip(pi, 0, 1).astype(f32), theta=theta.astype(f32))


def make_view(n_draws: int = 300, seed: int = 0, covariates: bool = False
              ) -> tuple[PosteriorView, pd.DataFrame, CellDraws]:
    cells = cells_table()
    draws = random_draws(cells, n_draws, seed)
    cov = None
    if covariates:
        cov = pd.DataFrame({"imd": [2.0, 1.0, -0.5, 0.3, -1.2, 0.8]},
                           index=pd.Index(list(AREAS), name="area"))
    view = PosteriorView(cells, draws, version="v-test", levels=["practice", "pcn", "icb"],
                         attributes=["age_band", "sex", "ethnicity"], covariates=cov)
    return view, cells, draws


def group_sums(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Brute force: per-draw float64 sum over the cells in `mask`."""
    return values[:, mask].astype(np.float64).sum(axis=1)


def summary(values: np.ndarray, prob: float = 0.9) -> dict[str, float]:
    lo, hi = np.quantile(values, [(1 - prob) / 2, (1 + prob) / 2])
    return {"mean": values.mean(), "sd": values.std(), "lower": lo, "upper": hi}
