"""A version's joint cell draws laid out for fast aggregation, and its queryable columns.

Aggregation is one sparse (groups x cells) matrix times the (cells x draws) matrices of
recorded and undiagnosed draws: every sum is taken per draw over the chosen cells, so
ratios and intervals of any group respect the joint posterior. True cases are recorded +
undiagnosed (as `gapmodel.fit.derive` makes them), so only those two are stored.

Sums accumulate in float32, the draws' own precision: the relative rounding error of a
sum over n cells is about 6e-8 sqrt(n) (2e-5 at 100,000 cells), far below the Monte
Carlo error of 1,000 draws. Summaries of them are taken in float64.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gapmodel.fit import CellDraws

if TYPE_CHECKING:
    from gapmodel.registry import Version

#: Columns every cells table has that are neither levels nor attributes.
CORE = ("area", "stratum", "population")
DECILE = "_decile"
MISSING = "missing"


class QueryError(ValueError):
    """A query the version cannot answer: an unknown column or value, bad filter syntax,
    an empty selection or an invalid setting. The message says what to change."""


def natural_key(label: str) -> tuple:
    """Sort key that orders digit runs as numbers: '5-9' < '10-14', '2' < '10'."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", label) if part != "")


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den (in their precision, at least float32), NaN where den is not positive."""
    dtype = np.result_type(num, den, np.float32)
    out = np.full(np.broadcast(num, den).shape, np.nan, dtype=dtype)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True, eq=False)
class Aggregate:
    """Per-group sums of cell draws (groups x draws, float32 like the draws) and group
    sizes; derived per-draw quantities are computed once, on first use."""

    keys: pd.DataFrame
    cells: np.ndarray
    population: np.ndarray
    recorded: np.ndarray
    undiagnosed: np.ndarray
    weighted_undiagnosed: np.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return len(self.keys)

    @cached_property
    def expected(self) -> np.ndarray:
        """True cases per draw: recorded + undiagnosed."""
        return self.recorded + self.undiagnosed

    @cached_property
    def unregistered(self) -> np.ndarray:
        """People not on the register per draw: population - recorded, and never fewer
        than the undiagnosed (recorded shares of a register count are fractional, so in a
        tiny cell N - R can fall below the whole number of people drawn undiagnosed)."""
        population = self.population.astype(self.recorded.dtype)[:, None]
        return np.maximum(population - self.recorded, self.undiagnosed)

    @cached_property
    def diagnosis_rate(self) -> np.ndarray:
        return ratio(self.recorded, self.expected)

    @cached_property
    def yield_per_contact(self) -> np.ndarray:
        """Undiagnosed per person not on the register, per draw."""
        return ratio(self.undiagnosed, self.unregistered)


class PosteriorView:
    """Cells, their joint draws and metadata of one version, ready to be queried.

    Columns usable in `by`, `where` and equity specs: the area hierarchy (``area``, also
    under the name of the base level, e.g. ``practice``, and the parent levels), the
    stratum attributes, ``stratum``; with area covariates, each covariate (numeric, for
    `where` comparisons) and ``<covariate>_decile`` (population-weighted deciles of
    areas, ``1`` = lowest value).
    """

    def __init__(self, cells: pd.DataFrame, draws: CellDraws, *, version: str = "unsaved",
                 meta: dict[str, Any] | None = None, levels: Sequence[str] | None = None,
                 attributes: Sequence[str] | None = None,
                 covariates: pd.DataFrame | None = None):
        cells = cells.reset_index(drop=True)
        missing = [c for c in CORE if c not in cells.columns]
        if missing:
            raise QueryError(f"the cells table lacks {', '.join(missing)}")
        if draws.recorded.shape[1] != len(cells):
            raise QueryError(f"draws cover {draws.recorded.shape[1]} cells, the table "
                             f"{len(cells)}")
        self.cells = cells
        self.version = version
        self.meta = dict(meta or {})
        self.n_draws = int(draws.recorded.shape[0])
        self.population = cells["population"].to_numpy(dtype=np.float64)
        # cells x draws, C-contiguous: a sparse product reads one contiguous row per cell.
        self._recorded = np.ascontiguousarray(draws.recorded.T, dtype=np.float32)
        self._undiagnosed = np.ascontiguousarray(draws.undiagnosed.T, dtype=np.float32)
        inferred_levels, inferred_attributes = self._infer_columns(cells)
        base = next(iter(levels)) if levels else "area"
        self.aliases = {base: "area"} if base != "area" else {}
        self.levels = tuple(["area", *(lv for lv in (levels or inferred_levels)
                                       if lv != base and lv != "area")])
        self.attributes = tuple(attributes or inferred_attributes)
        self._codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._numeric: dict[str, np.ndarray] = {"population": self.population}
        self.covariates = covariates
        if covariates is not None and len(covariates.columns):
            self._add_covariates(covariates)

    @classmethod
    def from_version(cls, version: Version) -> PosteriorView:
        """The view of a registry version (levels and attributes from its dataset)."""
        summary = version.meta.get("dataset", {}).get("summary", {})
        return cls(version.cells, version.draws, version=version.id, meta=version.meta,
                   levels=list(summary.get("levels", {})) or None,
                   attributes=list(summary.get("attributes", {})) or None,
                   covariates=version.covariates)

    # -- columns --------------------------------------------------------------------------

    @staticmethod
    def _infer_columns(cells: pd.DataFrame) -> tuple[list[str], list[str]]:
        """Levels: columns constant within each area (coarser last); attributes: the rest."""
        extra = [c for c in cells.columns if c not in CORE
                 and not pd.api.types.is_numeric_dtype(cells[c])]
        per_area = cells.groupby("area", sort=False)[extra].nunique() if extra else None
        levels = [c for c in extra if per_area is not None and (per_area[c] <= 1).all()]
        levels.sort(key=lambda c: -cells[c].nunique())
        return ["area", *levels], [c for c in extra if c not in levels]

    def _add_covariates(self, covariates: pd.DataFrame) -> None:
        frame = covariates.reindex(pd.Index(pd.unique(self.cells["area"]), name="area"))
        area_of_cell = pd.Index(frame.index).get_indexer(self.cells["area"])
        area_pop = np.bincount(area_of_cell, weights=self.population, minlength=len(frame))
        for name in frame.columns:
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            self._numeric[str(name)] = values[area_of_cell]
            labels = np.full(len(frame), MISSING, dtype=object)
            known = np.flatnonzero(~np.isnan(values))
            if len(known):
                order = known[np.argsort(values[known], kind="stable")]
                share = np.cumsum(area_pop[order]) / area_pop[order].sum()
                mid = share - area_pop[order] / area_pop[order].sum() / 2
                decile = np.minimum(np.floor(mid * 10).astype(int) + 1, 10)
                labels[order] = decile.astype(str)
            every = [str(d) for d in range(1, 11)] + ([MISSING] if len(known) < len(frame)
                                                       else [])
            self._derived_labels(f"{name}{DECILE}", labels[area_of_cell], every)

    def _derived_labels(self, name: str, values: np.ndarray,
                        every: Sequence[str] = ()) -> None:
        """Codes of `values` over their labels (plus `every`, present or not)."""
        inverse, uniques = pd.factorize(pd.Series([*every, *values], dtype=object))
        inverse = inverse[len(every):]
        order = sorted(range(len(uniques)), key=lambda i: natural_key(str(uniques[i])))
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        labels = np.array([str(uniques[i]) for i in order], dtype=object)
        self._codes[name] = (rank[inverse], labels)

    def columns(self) -> list[str]:
        """Every name `by` and `where` accept."""
        names = [*self.aliases, *self.levels, "stratum", *self.attributes]
        names += [n for n in self._codes if n.endswith(DECILE)]
        return list(dict.fromkeys(names))

    def resolve(self, name: str) -> str:
        """The canonical categorical column for a name; QueryError if there is none."""
        name = self.aliases.get(name, name)
        if name in self._codes or name in self.levels or name in self.attributes \
                or name == "stratum":
            return name
        if name in self._numeric:
            raise QueryError(f"'{name}' is numeric: compare it in a filter "
                             f"(e.g. {name} > 10), or group by "
                             + (f"'{name}{DECILE}'" if name != "population" else
                                "a categorical column"))
        raise QueryError(f"unknown column '{name}'; available: {', '.join(self.columns())}")

    def is_numeric(self, name: str) -> bool:
        return self.aliases.get(name, name) not in self._codes and name in self._numeric

    def numeric(self, name: str) -> np.ndarray:
        return self._numeric[name]

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Integer codes per cell and the labels they index (natural order)."""
        name = self.resolve(name)
        if name not in self._codes:
            values = self.cells[name].astype(str).to_numpy(dtype=object)
            self._derived_labels(name, values)
        return self._codes[name]

    def labels(self, name: str) -> list[str]:
        return [str(v) for v in self.codes(name)[1]]

    def resolve_by(self, by: str | Sequence[str] | None) -> list[str]:
        """Canonical group columns (none for the total), each named once."""
        names = [by] if isinstance(by, str) else list(by or [])
        out = [self.resolve(n) for n in names]
        if len(set(out)) != len(out):
            raise QueryError(f"a column is named twice in by={names}")
        return out

    # -- selection and aggregation --------------------------------------------------------

    def select(self, where: str | dict[str, Any] | None = None,
               areas: Sequence[str] | None = None) -> np.ndarray:
        """Boolean mask of the cells a filter keeps; QueryError if it keeps none."""
        from gapmodel.posterior.filters import where_mask

        mask = where_mask(self, where)
        if areas is not None:
            codes, labels = self.codes("area")
            wanted = [str(a) for a in ([areas] if isinstance(areas, str) else areas)]
            known = set(labels.tolist())
            unknown = [a for a in wanted if a not in known]
            if unknown:
                raise QueryError(f"unknown area code(s): {', '.join(unknown[:10])}"
                                 + (f" and {len(unknown) - 10} more" if len(unknown) > 10
                                    else ""))
            positions = np.flatnonzero(np.isin(labels, wanted))
            mask &= np.isin(codes, positions)
        if not mask.any():
            raise QueryError("the selection is empty: no cells match "
                             + "; ".join(f"{k}={v!r}" for k, v in
                                         (("where", where), ("areas", areas)) if v))
        return mask

    def grouping(self, by: Sequence[str], mask: np.ndarray | None = None
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Group keys (sorted), each selected cell's group and the selected cells."""
        index = np.flatnonzero(mask) if mask is not None else np.arange(len(self.cells))
        if not by:
            return pd.DataFrame(index=range(1)), np.zeros(len(index), np.int64), index
        parts = [self.codes(name) for name in by]
        dims = [len(labels) for _, labels in parts]
        combined = np.ravel_multi_index([codes[index] for codes, _ in parts], dims)
        uniq, group = np.unique(combined, return_inverse=True)
        positions = np.unravel_index(uniq, dims)
        keys = pd.DataFrame({name: labels[pos].astype(str) for name, (_, labels), pos
                             in zip(by, parts, positions, strict=True)})
        return keys, group.ravel(), index

    def aggregate(self, by: Sequence[str], mask: np.ndarray | None = None,
                  weights: np.ndarray | None = None) -> Aggregate:
        """Per-draw sums over the selected cells of each group of `by` (canonical names).

        `weights` (per cell) adds the weighted sum of undiagnosed draws.
        """
        keys, group, index = self.grouping(by, mask)
        return self._sums(keys, group, index, weights)

    def aggregate_chunks(self, by: Sequence[str], mask: np.ndarray | None = None,
                         max_values: int = 1 << 22) -> Iterator[Aggregate]:
        """`aggregate` in consecutive runs of groups of at most `max_values` group draws
        each, so that summaries of very many groups (cells, say) use bounded memory."""
        keys, group, index = self.grouping(by, mask)
        size = max(1, max_values // max(self.n_draws, 1))
        if len(keys) <= size:
            yield self._sums(keys, group, index)
            return
        order = np.argsort(group, kind="stable")
        starts = np.arange(0, len(keys) + size, size)
        bounds = np.searchsorted(group[order], np.minimum(starts, len(keys)))
        for first, lo, hi in zip(starts[:-1], bounds[:-1], bounds[1:], strict=True):
            if first >= len(keys):
                break
            chunk = order[lo:hi]
            yield self._sums(keys.iloc[first:first + size].reset_index(drop=True),
                             group[chunk] - first, index[chunk])

    def _sums(self, keys: pd.DataFrame, group: np.ndarray, index: np.ndarray,
              weights: np.ndarray | None = None) -> Aggregate:
        n_groups = len(keys)
        shape = (n_groups, len(self.cells))

        def total(values: np.ndarray, data: np.ndarray) -> np.ndarray:
            # column-major: the product reads the cells' rows in order, once, whichever
            # way groups interleave
            matrix = sp.csc_matrix((data, (group, index)), shape=shape)
            return np.asarray(matrix @ values)

        ones = np.ones(len(index), dtype=np.float32)
        weighted = None
        if weights is not None:
            weighted = total(self._undiagnosed, np.asarray(weights, np.float32)[index])
        return Aggregate(
            keys=keys, cells=np.bincount(group, minlength=n_groups),
            population=np.bincount(group, weights=self.population[index],
                                   minlength=n_groups),
            recorded=total(self._recorded, ones), undiagnosed=total(self._undiagnosed, ones),
            weighted_undiagnosed=weighted)

    def describe(self) -> dict[str, Any]:
        """Version id, draws and the names a query may use."""
        return {"version": self.version, "draws": self.n_draws, "cells": len(self.cells),
                "levels": list(self.levels), "aliases": dict(self.aliases),
                "attributes": list(self.attributes), "columns": self.columns()}
