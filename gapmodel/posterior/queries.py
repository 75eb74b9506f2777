"""Estimates for any grouping and selection of cells, summarised from per-draw sums."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gapmodel.posterior.filters import Where
from gapmodel.posterior.view import Aggregate, PosteriorView, QueryError
from gapmodel.summary import PROB, intervals

MEASURES = ("expected", "recorded", "undiagnosed", "diagnosis_rate", "yield_per_contact",
            "number_needed_to_screen")
STATS = ("mean", "sd", "lower", "upper")


def check_prob(prob: float) -> float:
    if not 0 < prob < 1:
        raise QueryError(f"the interval probability must be between 0 and 1, not {prob}")
    return float(prob)


def summary_columns(prefix: str, values: np.ndarray, prob: float) -> dict[str, np.ndarray]:
    """``<prefix>_mean, _sd, _lower, _upper`` of groups x draws."""
    return {f"{prefix}_{k}": v for k, v in intervals(values, prob, axis=1).items()}


def nns_columns(yield_draws: np.ndarray, prob: float) -> dict[str, np.ndarray]:
    """Number needed to screen, 1 / yield per draw (inf where the yield is 0).

    Its interval is the reciprocal of the yield's interval (exact for order statistics),
    its mean the mean of 1 / yield (inf when any draw finds no one).
    """
    tail = (1 - prob) / 2
    lo, hi = np.quantile(yield_draws, [tail, 1 - tail], axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        nns = 1.0 / yield_draws.astype(np.float64)
        mean = nns.mean(axis=1)
        sd = np.where(np.isfinite(mean), nns.std(axis=1), np.nan)
        return {"number_needed_to_screen_mean": mean, "number_needed_to_screen_sd": sd,
                "number_needed_to_screen_lower": 1.0 / hi,
                "number_needed_to_screen_upper": 1.0 / lo}


def exceed_label(k: float) -> str:
    return f"p_undiagnosed_gt_{k:g}"


def measure_table(agg: Aggregate, prob: float, exceed: Sequence[float] = ()
                  ) -> pd.DataFrame:
    """Keys, cells, population and every measure's summary columns."""
    table = agg.keys.copy()
    table["cells"] = agg.cells
    table["population"] = agg.population.round().astype(np.int64) \
        if np.allclose(agg.population, agg.population.round()) else agg.population
    columns: dict[str, np.ndarray] = {}
    rate = agg.yield_per_contact
    for name, values in (("expected", agg.expected), ("recorded", agg.recorded),
                         ("undiagnosed", agg.undiagnosed),
                         ("diagnosis_rate", agg.diagnosis_rate),
                         ("yield_per_contact", rate)):
        columns |= summary_columns(name, values, prob)
    columns |= nns_columns(rate, prob)
    for k in exceed:
        columns[exceed_label(k)] = (agg.undiagnosed > k).mean(axis=1)
    return pd.concat([table, pd.DataFrame(columns, index=table.index)], axis=1)


def estimates(view: PosteriorView, by: str | Sequence[str] | None = None,
              where: Where = None, areas: Sequence[str] | None = None, prob: float = PROB,
              exceed: Sequence[float] = ()) -> pd.DataFrame:
    """Per group: true cases (expected), recorded, undiagnosed, diagnosis rate
    (recorded / expected), yield per contact (undiagnosed / (population - recorded)) and
    number needed to screen (1 / yield), each as mean, sd and equal-tailed `prob` interval
    of per-draw group values; cells, population and P(undiagnosed > k) for k in `exceed`.

    `by`: a level (``pcn``), attribute (``ethnicity``), list of them, or None for one
    total row. `where`: a filter string or a column -> values mapping
    (`gapmodel.posterior.filters`); `areas`: base area codes to keep. The result's
    ``attrs`` name the version, interval probability, draws and query.
    """
    prob = check_prob(prob)
    columns = view.resolve_by(by)
    exceed = [float(k) for k in exceed]
    mask = view.select(where, areas)
    table = pd.concat([measure_table(agg, prob, exceed)
                       for agg in view.aggregate_chunks(columns, mask)], ignore_index=True)
    table.attrs = {"version": view.version, "prob": prob, "draws": view.n_draws,
                   "by": columns, "where": where if isinstance(where, str | None) else
                   dict(where), "areas": list(areas) if areas is not None else None}
    return table
