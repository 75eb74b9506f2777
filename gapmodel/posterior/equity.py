"""Who is under-diagnosed: diagnosis rates by group against a reference, and the slope
and relative index of inequality along an ordered attribute.

Rates are crude (recorded / true cases within each group), compared per draw, so ratio
and difference intervals carry the groups' joint uncertainty. A group's crude rate
reflects its whole case mix: an ethnic group that is younger on average has a lower
crude rate partly through age; group by age as well (``estimates(by=[...])``) to see
within-age gaps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gapmodel.posterior.filters import Where
from gapmodel.posterior.queries import check_prob, summary_columns
from gapmodel.posterior.view import PosteriorView, QueryError, natural_key, ratio
from gapmodel.summary import PROB, intervals


def equity(view: PosteriorView, by: str, reference: str | None = None, where: Where = None,
           areas: Sequence[str] | None = None, prob: float = PROB) -> pd.DataFrame:
    """Per group of `by`: diagnosis rate, ratio and difference against `reference`
    (default: the group with the largest population), each with mean, sd and interval,
    and P(ratio < 1): the probability the group is diagnosed less than the reference."""
    prob = check_prob(prob)
    column = view.resolve(by)
    agg = view.aggregate([column], view.select(where, areas))
    labels = agg.keys[column].tolist()
    if reference is None:
        ref = int(np.argmax(agg.population))
    elif str(reference) in labels:
        ref = labels.index(str(reference))
    else:
        raise QueryError(f"reference '{reference}' is not a group of '{column}' in the "
                         f"selection; groups: {', '.join(labels)}")
    rate = agg.diagnosis_rate
    table = agg.keys.copy()
    table["reference"] = np.arange(len(labels)) == ref
    table["cells"] = agg.cells
    table["population"] = agg.population.round().astype(np.int64)
    columns = summary_columns("expected", agg.expected, prob)
    columns |= summary_columns("undiagnosed", agg.undiagnosed, prob)
    columns |= summary_columns("diagnosis_rate", rate, prob)
    ratios = ratio(rate, rate[[ref]])
    columns |= summary_columns("ratio", ratios, prob)
    columns |= summary_columns("difference", rate - rate[[ref]], prob)
    columns["p_ratio_below_1"] = (ratios < 1).mean(axis=1)
    table = pd.concat([table, pd.DataFrame(columns)], axis=1)
    table.attrs = {"version": view.version, "prob": prob, "by": column,
                   "reference": labels[ref], "draws": view.n_draws}
    return table


def inequality(view: PosteriorView, attribute: str = "imd_quintile",
               order: Sequence[str] | None = None, where: Where = None,
               areas: Sequence[str] | None = None, prob: float = PROB) -> pd.DataFrame:
    """Slope (SII) and relative (RII) index of inequality of the diagnosis rate along an
    ordered attribute, per draw, with intervals.

    Groups are ranked in `order` (default: natural order of the labels, e.g. quintile
    1..5, decile 1..10; groups it names that have no cells in the selection are
    skipped). In each draw, each group sits at the midpoint of its cumulative share of
    true cases (its ridit, 0 to 1), and a least-squares line weighted by those shares is
    fitted to the groups' diagnosis rates: SII is the slope (the fitted rate at rank 1
    minus at rank 0) and RII the fitted rate at rank 1 over that at rank 0. For
    ``imd_quintile`` (1 = most deprived) a positive SII means the less deprived are
    diagnosed more; for ``<covariate>_decile`` rank 0 is the lowest value.
    ``p_increasing``: the probability that the rate rises from rank 0 to rank 1.
    """
    prob = check_prob(prob)
    column = view.resolve(attribute)
    agg = view.aggregate([column], view.select(where, areas))
    labels = agg.keys[column].tolist()
    if order is None:
        ranked = sorted(labels, key=natural_key)
    else:
        given = [str(v) for v in order]
        known = set(view.labels(column))
        if len(set(given)) != len(given) or not set(labels) <= set(given) <= known:
            raise QueryError(f"order must list each group of '{column}' once, at least "
                             f"those in the selection: {', '.join(labels)}")
        ranked = [v for v in given if v in labels]  # groups without cells drop out
    if len(ranked) < 2:
        raise QueryError(f"inequality needs at least two groups of '{column}'")
    index = [labels.index(v) for v in ranked]
    cases, rate = agg.expected[index], agg.diagnosis_rate[index]
    sii, rii = slope_index(rate, cases)
    table = pd.DataFrame([intervals(sii, prob, axis=0), intervals(rii, prob, axis=0)],
                         index=pd.Index(["sii", "rii"], name="measure"))
    table = table.astype(float)
    table["p_increasing"] = [(sii > 0).mean(), (rii > 1).mean()]
    table.attrs = {"version": view.version, "prob": prob, "attribute": column,
                   "order": ranked, "draws": view.n_draws, "weights": "true cases"}
    return table


def slope_index(rate: np.ndarray, cases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SII and RII per draw from groups x draws rates and case counts (groups ranked)."""
    rate, cases = np.asarray(rate, np.float64), np.asarray(cases, np.float64)
    share = cases / cases.sum(axis=0)
    ridit = np.cumsum(share, axis=0) - share / 2
    x_bar = (share * ridit).sum(axis=0)
    y_bar = (share * rate).sum(axis=0)
    dx = ridit - x_bar
    slope = (share * dx * (rate - y_bar)).sum(axis=0) / (share * dx**2).sum(axis=0)
    intercept = y_bar - slope * x_bar
    return slope, ratio(intercept + slope, intercept)
