"""Outreach targeting: where a fixed capacity finds the most undiagnosed people.

A unit is an area (at any level) or an area x stratum. Contacting c people who are not on
the register in unit u finds ``c * y_u * sensitivity`` people, with ``y_u = U_u / (N_u -
R_u)`` the unit's yield per contact in each draw. Found people are linear in contacts, so
spreading contacts greedily by posterior mean yield, each unit taking up to its
unregistered population, maximises the expected number found (a fractional knapsack).
With capacity in areas, the N units with the largest expected undiagnosed count are
chosen and all their unregistered people contacted.

Equity weights multiply the yield (or the count) a unit is ranked by, never the people
it reports as found. ``P(optimal)`` is the share of draws in which a unit is in that
draw's own optimal selection: low values mark choices the data do not settle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from gapmodel.posterior.filters import Where
from gapmodel.posterior.queries import check_prob, summary_columns
from gapmodel.posterior.view import PosteriorView, QueryError, ratio
from gapmodel.summary import PROB, interval

Equity = str | Mapping[str, Any] | None
RANKABLE = {"undiagnosed": False, "expected": False, "yield_per_contact": False,
            "diagnosis_rate": True}  # measure -> lowest first


@dataclass(frozen=True, eq=False)
class Plan:
    """Chosen units in priority order, the plan's total found and its settings."""

    units: pd.DataFrame
    total: dict[str, Any]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, total and one record per unit."""
        units = self.units.astype(object).where(self.units.notna(), None)
        return {**self.settings, "total": self.total, "units": units.to_dict("records")}


def plan(view: PosteriorView, capacity: float,
         capacity_unit: Literal["contacts", "areas"] = "contacts",
         unit: Literal["area", "area_stratum"] = "area", level: str | None = None,
         where: Where = None, areas: Sequence[str] | None = None,
         sensitivity: float = 1.0, equity: Equity = None, prob: float = PROB) -> Plan:
    """Choose units that maximise the expected number of undiagnosed people found.

    `capacity`: contacts (people) or a number of units (``capacity_unit="areas"``).
    `unit`: areas at `level` (default the base area) or area x stratum. `equity`: None,
    ``"least_diagnosed"`` (weight = overall diagnosis rate / the unit's) or
    ``{"attribute": "imd_quintile", "weights": {"1": 2.0, ...}}`` (people with a weighted
    value count that much more; unnamed values weigh 1).
    """
    prob = check_prob(prob)
    if capacity_unit not in ("contacts", "areas"):
        raise QueryError(f"capacity_unit is 'contacts' or 'areas', not '{capacity_unit}'")
    if unit not in ("area", "area_stratum"):
        raise QueryError(f"unit is 'area' or 'area_stratum', not '{unit}'")
    if not (capacity >= 1 and float(capacity).is_integer()):
        raise QueryError(f"capacity must be a whole number of at least 1, not {capacity}")
    if not 0 < sensitivity <= 1:
        raise QueryError(f"sensitivity must be in (0, 1], not {sensitivity}")
    level = _level(view, level)
    by = [level] if unit == "area" else [level, "stratum"]
    weights = cell_weights(view, equity)
    agg = view.aggregate(by, view.select(where, areas), weights=weights)
    unregistered = agg.unregistered
    found_rate = np.nan_to_num(agg.yield_per_contact, nan=0.0)
    gain = found_rate if weights is None else \
        np.nan_to_num(ratio(agg.weighted_undiagnosed, unregistered), nan=0.0)
    if equity == "least_diagnosed":
        overall = agg.recorded.sum(axis=0, dtype=np.float64) \
            / agg.expected.sum(axis=0, dtype=np.float64)
        unit_rate = np.nanmean(agg.diagnosis_rate, axis=1, dtype=np.float64)
        unit_weight = np.nan_to_num(ratio(np.full(agg.n_groups, overall.mean()), unit_rate),
                                    nan=1.0).astype(np.float32)
        gain = gain * unit_weight[:, None]
    room = np.floor(unregistered.mean(axis=1, dtype=np.float64))
    capacity = int(capacity)
    if capacity_unit == "contacts":
        score = gain.mean(axis=1, dtype=np.float64)
        contacts = fill(score, room, capacity)
        p_optimal = p_optimal_contacts(gain, room, capacity)
    else:
        value = gain * unregistered
        score = value.mean(axis=1, dtype=np.float64)
        order = _descending(score, room > 0)[:capacity]
        contacts = np.zeros(agg.n_groups)
        contacts[order] = room[order]
        p_optimal = p_top(value, capacity, eligible=room > 0)
    chosen = _descending(score, contacts > 0)
    found = contacts[chosen, None] * found_rate[chosen].astype(np.float64) * sensitivity
    table = agg.keys.iloc[chosen].reset_index(drop=True)
    if unit == "area_stratum":
        table = _with_attributes(view, table)
    table.insert(0, "rank", np.arange(1, len(chosen) + 1))
    table["population"] = agg.population[chosen].round().astype(np.int64)
    table["unregistered"] = room[chosen].astype(np.int64)
    if equity is not None:
        table["weight"] = ratio(gain[chosen].mean(axis=1, dtype=np.float64),
                                found_rate[chosen].mean(axis=1, dtype=np.float64))
    table["contacts"] = contacts[chosen].astype(np.int64)
    columns = summary_columns("found", found, prob)
    columns |= summary_columns("yield", found_rate[chosen], prob)
    table = pd.concat([table, pd.DataFrame(columns)], axis=1)
    table["p_optimal"] = p_optimal[chosen]
    total = interval(found.sum(axis=0), prob)
    settings = {"version": view.version, "prob": prob, "capacity": capacity,
                "capacity_unit": capacity_unit, "unit": unit, "level": level,
                "sensitivity": sensitivity, "equity": equity,
                "where": where if isinstance(where, str | None) else dict(where)}
    return Plan(units=table, settings=settings,
                total={"units": len(chosen), "contacts": int(contacts.sum()),
                       "found": total})


def top_n(view: PosteriorView, n: int, level: str = "area", by: str = "undiagnosed",
          where: Where = None, areas: Sequence[str] | None = None,
          prob: float = PROB) -> pd.DataFrame:
    """The n units at `level` ranked by the posterior mean of `by` (``undiagnosed``,
    ``expected``, ``yield_per_contact``: largest first; ``diagnosis_rate``: lowest first),
    with intervals and P(in top n): the share of draws in which the unit ranks in the
    top n of that draw."""
    prob = check_prob(prob)
    if by not in RANKABLE:
        raise QueryError(f"top_n ranks by one of {', '.join(RANKABLE)}, not '{by}'")
    if not (n >= 1 and float(n).is_integer()):
        raise QueryError(f"n must be a whole number of at least 1, not {n}")
    level = _level(view, level)
    agg = view.aggregate([level], view.select(where, areas))
    values = getattr(agg, by)
    sign = -1.0 if RANKABLE[by] else 1.0
    score = np.nan_to_num(sign * values, nan=-np.inf)
    mean = np.nanmean(values, axis=1, dtype=np.float64)
    n = int(n)
    order = _descending(np.nan_to_num(sign * mean, nan=-np.inf),
                        np.ones(agg.n_groups, bool))[:n]
    p = p_top(score, n, eligible=np.ones(agg.n_groups, bool))
    table = agg.keys.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(order) + 1))
    table["population"] = agg.population[order].round().astype(np.int64)
    table = pd.concat([table, pd.DataFrame(summary_columns(by, values[order], prob))],
                      axis=1)
    table["p_top_n"] = p[order]
    table.attrs = {"version": view.version, "prob": prob, "n": n, "by": by, "level": level}
    return table


# -- pieces -------------------------------------------------------------------------------


def fill(score: np.ndarray, room: np.ndarray, capacity: int) -> np.ndarray:
    """Contacts per unit: greedily by score (positive only), up to each unit's room."""
    order = _descending(score, (room > 0) & (score > 0))
    before = np.cumsum(room[order]) - room[order]
    contacts = np.zeros(len(score))
    contacts[order] = np.clip(capacity - before, 0, room[order])
    return contacts


def p_optimal_contacts(gain: np.ndarray, room: np.ndarray, capacity: int) -> np.ndarray:
    """Share of draws in which each unit gets contacts in that draw's greedy allocation.

    Exact without sorting every unit in every draw: any set of units gives, in each draw,
    a floor (the gain at which its own greedy fill reaches the capacity) below which no
    unit can be chosen in that draw. The units first by mean gain that hold twice the
    capacity give a floor close to the draw's own threshold; only the (unit, draw) pairs
    at or above it are sorted.
    """
    n_units, n_draws = gain.shape
    eligible = room > 0
    p = np.zeros(n_units)
    if room[eligible].sum() <= capacity:
        p[eligible] = (gain[eligible] > 0).mean(axis=1)
        return p
    order = _descending(gain.mean(axis=1, dtype=np.float64), eligible)
    held = np.cumsum(room[order])
    leaders = order[:np.searchsorted(held, min(2 * capacity, held[-1])) + 1]
    lead = gain[leaders]
    ranked = np.argsort(-lead, axis=0, kind="stable")
    reach = np.argmax(np.cumsum(room[leaders][ranked], axis=0) >= capacity, axis=0)
    floor = np.take_along_axis(lead, ranked, axis=0)[reach, np.arange(n_draws)]
    draw, unit = np.nonzero((gain >= floor).T & eligible)  # draw-major
    value = gain[unit, draw].astype(np.float64)
    # one sort: by draw, then by gain, highest first (1 / (1 + gain) lies in (0, 1])
    sort = np.argsort(draw + 1.0 / (1.0 + np.maximum(value, 0.0)), kind="stable")
    unit, draw, value = unit[sort], draw[sort], value[sort]
    rooms = room[unit]
    cum = np.cumsum(rooms)
    start = np.concatenate([[0.0], cum])[np.searchsorted(draw, np.arange(n_draws))]
    taken = (cum - rooms - start[draw] < capacity) & (value > 0)
    p += np.bincount(unit[taken], minlength=n_units) / n_draws
    return p


def p_top(value: np.ndarray, n: int, eligible: np.ndarray) -> np.ndarray:
    """Share of draws in which each unit is among the n largest (eligible units only)."""
    p = np.zeros(value.shape[0])
    idx = np.flatnonzero(eligible)
    if n >= len(idx):
        p[idx] = 1.0
        return p
    top = np.argpartition(-value[idx], n - 1, axis=0)[:n]
    p[idx] = np.bincount(top.ravel(), minlength=len(idx)) / value.shape[1]
    return p


def cell_weights(view: PosteriorView, equity: Equity) -> np.ndarray | None:
    """Per-cell weights of an attribute equity spec (None for no spec or least_diagnosed)."""
    if equity is None or equity == "least_diagnosed":
        return None
    if isinstance(equity, str) or not isinstance(equity, Mapping):
        raise QueryError("equity is None, 'least_diagnosed' or {'attribute': name, "
                         "'weights': {value: weight}}")
    extra = set(equity) - {"attribute", "weights"}
    if extra or "attribute" not in equity or not isinstance(equity.get("weights"), Mapping):
        raise QueryError("an equity spec has exactly 'attribute' and 'weights' "
                         "(a value -> weight mapping)")
    codes, labels = view.codes(str(equity["attribute"]))
    table = np.ones(len(labels))
    position = {label: i for i, label in enumerate(labels.tolist())}
    for value, weight in equity["weights"].items():
        if str(value) not in position:
            raise QueryError(f"unknown value {value!r} for '{equity['attribute']}' in the "
                             f"equity weights; values: {', '.join(map(str, labels))}")
        if not (isinstance(weight, int | float) and np.isfinite(weight) and weight >= 0):
            raise QueryError(f"equity weights are finite and non-negative, not {weight!r}")
        table[position[str(value)]] = float(weight)
    return table[codes]


def _level(view: PosteriorView, level: str | None) -> str:
    name = view.resolve(level or "area")
    if name not in view.levels:
        raise QueryError(f"'{level}' is not an area level; levels: "
                         f"{', '.join([*view.aliases, *view.levels])}")
    return name


def _descending(score: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Indices of kept units, highest score first (stable, so ties keep table order)."""
    order = np.argsort(-score, kind="stable")
    return order[keep[order]]


def _with_attributes(view: PosteriorView, table: pd.DataFrame) -> pd.DataFrame:
    """Add each stratum's attributes to an area x stratum table."""
    attributes = [a for a in view.attributes if a in view.cells.columns]
    strata = view.cells.drop_duplicates("stratum").set_index("stratum")[attributes]
    strata.index = strata.index.astype(str)
    return table.join(strata, on="stratum")
