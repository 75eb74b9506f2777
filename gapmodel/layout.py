"""Moving values between areas, strata, cells and observations in the model's graph.

Every register term of a model gathers area values to cells and sums cells to areas or
observations, and the Laplace collapse differentiates each of them twice more. Done by
index, each is an `AdvancedSubtensor` or `AdvancedIncSubtensor` node: on England by PCN,
gathers took 27% of a gradient and scatters 12%. Where the cells form a complete area x
stratum grid (every area the same strata in the same order, area by area), a gather is a
broadcast reshaped to the vector of cells and a sum a reduction over the grid's axis:
29% less time per gradient on hypertension by PCN, 39% on dementia (docs/performance.md).
Elsewhere these fall back to indexing. Cell values are vectors (C,) in the dataset's
order either way: keeping them as (area, stratum) matrices was measured too, and was
slower and took longer to compile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytensor.tensor as pt

if TYPE_CHECKING:
    from gapmodel.model import ModelData


def grid_strata(cell_area: np.ndarray, strata: np.ndarray, n_areas: int) -> int:
    """Cells per area where cells form a complete area-major grid with every area's strata
    in the same order; 0 where they do not."""
    n_cells = len(cell_area)
    if n_areas == 0 or n_cells % n_areas:
        return 0
    per_area = n_cells // n_areas
    if not (cell_area == np.repeat(np.arange(n_areas), per_area)).all():
        return 0
    grid = np.asarray(strata).reshape(n_areas, per_area)
    return per_area if (grid == grid[0]).all() else 0


def obs_are_areas(pair_obs: np.ndarray, pair_cell: np.ndarray, cell_area: np.ndarray,
                  kind: np.ndarray, n_obs: int, n_areas: int) -> bool:
    """Is observation a the plain total of area a's cells, for every area in order (as
    registers of totals by area are)?"""
    return (n_obs == n_areas and len(pair_cell) == len(cell_area)
            and bool((pair_cell == np.arange(len(cell_area))).all())
            and bool((pair_obs == cell_area).all()) and not kind.any())


def _shape(data: ModelData) -> tuple[int, int]:
    return len(data.areas), data.grid_strata


def _repeats(data: ModelData, index: np.ndarray) -> bool:
    """Does a per-cell `index` repeat area by area on the grid?"""
    grid = index.reshape(_shape(data))
    return bool((grid == grid[0]).all())


def to_cells(data: ModelData, area_values) -> pt.TensorVariable:
    """Each cell's value of its area (A,) -> (C,)."""
    area_values = pt.as_tensor(area_values)
    if data.grid_strata:
        return pt.broadcast_to(area_values[:, None], _shape(data)).reshape((-1,))
    return area_values[data.cell_area]


def by_stratum(data: ModelData, values, index: np.ndarray) -> pt.TensorVariable:
    """`values[index]` for a per-cell `index` (a reference stratum, a group level); one
    area's gather broadcast over the areas where the grid repeats the index."""
    values = pt.as_tensor(values)
    if data.grid_strata and _repeats(data, index):
        row = values[index[:data.grid_strata]]
        return pt.broadcast_to(row[None, :], _shape(data)).reshape((-1,))
    return values[index]


def summed_by_strata(data: ModelData, terms: list[tuple[object, np.ndarray]]
                     ) -> pt.TensorVariable:
    """Per cell, the sum of `values[index]` over the (values, per-cell index) `terms`,
    gathered once: the terms are summed over the combinations of levels the cells hold (a
    few hundred at most), and each cell takes its combination's sum. One gather, where a
    gather per term would cost a scatter-add per term in the gradient, each a chain of
    adds into a few levels (about a fifth of the synthetic gradient at 1,000 areas went to
    such scatters; docs/performance.md)."""
    if not terms:
        return pt.zeros(data.n_cells)
    if len(terms) == 1:
        return by_stratum(data, *terms[0])
    levels, combination = np.unique(np.stack([index for _, index in terms], axis=1),
                                    axis=0, return_inverse=True)
    table = sum(pt.as_tensor(values)[levels[:, k]] for k, (values, _) in enumerate(terms))
    return by_stratum(data, table, combination.ravel())


def area_sums(data: ModelData, cell_values) -> pt.TensorVariable:
    """Per area, the sum of its cells' values (C,) -> (A,)."""
    cell_values = pt.as_tensor(cell_values)
    if data.grid_strata:
        return cell_values.reshape(_shape(data)).sum(axis=1)
    return pt.inc_subtensor(pt.zeros(len(data.areas))[data.cell_area], cell_values)


def index_sums(data: ModelData, cell_values, index: np.ndarray, size: int
               ) -> pt.TensorVariable:
    """Per level of a per-cell `index` (size levels), the sum of its cells' values."""
    cell_values = pt.as_tensor(cell_values)
    if data.grid_strata and _repeats(data, index):
        per_stratum = cell_values.reshape(_shape(data)).sum(axis=0)
        return pt.inc_subtensor(pt.zeros(size)[index[:data.grid_strata]], per_stratum)
    return pt.inc_subtensor(pt.zeros(size)[index], cell_values)


def obs_totals(data: ModelData, cell_values, weight=None) -> pt.TensorVariable:
    """Per observation, the weighted sum of the cell values it covers (weights per
    (observation, cell) pair; None: all 1)."""
    if data.obs_are_areas and weight is None:
        return area_sums(data, cell_values)
    pairs = pt.as_tensor(cell_values)[data.pair_cell]
    if weight is not None:
        pairs = pairs * weight
    return pt.inc_subtensor(pt.zeros(len(data.obs_lo))[data.pair_obs], pairs)


def completeness_order(data: ModelData) -> np.ndarray | None:
    """Where every cell is the one cell of a recorded count of its own (weight rho) and the
    rest are not-stated counts (weight 1 - rho) within one area each, as registers by
    recorded ethnicity are: the observations in the order [the recorded counts, cell by
    cell; the not-stated counts]; None for any other layout."""
    kind, cell, obs = data.pair_kind, data.pair_cell, data.pair_obs
    recorded = kind == 1
    if not recorded.any() or (kind == 0).any() or recorded.sum() != data.n_cells:
        return None
    per_obs = np.bincount(obs, minlength=len(data.obs_lo))
    by_cell = np.full(data.n_cells, -1)
    by_cell[cell[recorded]] = obs[recorded]
    if (per_obs[obs[recorded]] != 1).any() or (by_cell < 0).any():
        return None
    not_stated = np.unique(obs[~recorded])
    area = np.full(len(data.obs_lo), -1)
    area[obs[~recorded]] = data.cell_area[cell[~recorded]]
    if (area[obs[~recorded]] != data.cell_area[cell[~recorded]]).any() \
            or len(not_stated) + data.n_cells != len(data.obs_lo):
        return None  # a not-stated count spans areas, or a count is of neither kind
    return np.concatenate([by_cell, not_stated])


def register_totals(data: ModelData, cell_values, rho, order: np.ndarray
                    ) -> pt.TensorVariable:
    """`obs_totals` with completeness `rho` (A,) for the observations in `order`
    (`completeness_order`): a recorded count is its cell's value times its area's rho,
    with no gather, and a not-stated count its cells' sum times 1 - rho, the weight
    taken once per count rather than per cell: at 1,000 areas a gradient of the
    synthetic scenario takes a fifth less time than through the pairs
    (docs/performance.md)."""
    cell_values, rho = pt.as_tensor(cell_values), pt.as_tensor(rho)
    recorded = cell_values * to_cells(data, rho)
    not_stated = order[data.n_cells:]
    position = np.full(len(data.obs_lo), -1)
    position[not_stated] = np.arange(len(not_stated))
    pairs = data.pair_kind == 2
    sums = pt.inc_subtensor(pt.zeros(len(not_stated))[position[data.pair_obs[pairs]]],
                            cell_values[data.pair_cell[pairs]])
    area = np.zeros(len(data.obs_lo), dtype=int)
    area[data.pair_obs[pairs]] = data.cell_area[data.pair_cell[pairs]]
    return pt.concatenate([recorded, sums * (1 - rho[area[not_stated]])])
