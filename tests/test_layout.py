"""Gathers and sums over a complete area x stratum grid give what indexing gives."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.variable import TensorConstant

from gapmodel import layout
from gapmodel.model import ModelData, build_model, prepare
from gapmodel.spec import ModelSpec

N_AREAS, N_STRATA = 7, 5
ROOT = Path(__file__).resolve().parents[1]


def _grid_data(**changes) -> ModelData:
    """Index data of a complete 7-area x 5-stratum grid, observations one per area."""
    cell_area = np.repeat(np.arange(N_AREAS), N_STRATA)
    n_cells = len(cell_area)
    fields = {f.name: None for f in dataclasses.fields(ModelData)}
    fields.update(
        n_cells=n_cells, cell_area=cell_area, areas=[f"A{i}" for i in range(N_AREAS)],
        cell_ref=np.tile([0, 1, 1, 2, 0], N_AREAS), pair_obs=cell_area.copy(),
        pair_cell=np.arange(n_cells), obs_lo=np.zeros(N_AREAS, dtype=np.int64),
        grid_strata=N_STRATA, obs_are_areas=True)
    fields.update(changes)
    return ModelData(**fields)


def _eval(expr, inputs, values):
    return pytensor.function(inputs, expr)(*values)


@pytest.mark.parametrize("grid", [True, False])
def test_grid_reshapes_give_what_indexing_gives(grid):
    data = _grid_data() if grid else _grid_data(grid_strata=0, obs_are_areas=False)
    rng = np.random.default_rng(1)
    by_area, by_ref, by_cell = (rng.normal(size=n) for n in (N_AREAS, 3, data.n_cells))
    a, r = pt.dvector("a"), pt.dvector("r")
    np.testing.assert_array_equal(_eval(layout.to_cells(data, a), [a], [by_area]),
                                  by_area[data.cell_area])
    np.testing.assert_array_equal(_eval(layout.by_stratum(data, r, data.cell_ref), [r],
                                        [by_ref]), by_ref[data.cell_ref])
    # sums of a cell expression: an area's value times a stratum's times a constant
    expr = layout.to_cells(data, a) * layout.by_stratum(data, r, data.cell_ref) * by_cell
    values = by_area[data.cell_area] * by_ref[data.cell_ref] * by_cell
    inputs = ([a, r], [by_area, by_ref])
    sums = np.bincount(data.cell_area, weights=values, minlength=N_AREAS)
    np.testing.assert_allclose(_eval(layout.area_sums(data, expr), *inputs), sums,
                               rtol=1e-14)
    np.testing.assert_allclose(_eval(layout.obs_totals(data, expr), *inputs), sums,
                               rtol=1e-14)
    np.testing.assert_allclose(_eval(layout.index_sums(data, expr, data.cell_ref, 3),
                                     *inputs),
                               np.bincount(data.cell_ref, weights=values, minlength=3),
                               rtol=1e-14)
    weight = rng.uniform(size=data.n_cells)
    np.testing.assert_allclose(
        _eval(layout.obs_totals(data, expr, pt.as_tensor(weight)), *inputs),
        np.bincount(data.cell_area, weights=values * weight, minlength=N_AREAS), rtol=1e-14)


@pytest.mark.parametrize("grid", [True, False])
def test_terms_summed_by_strata_are_the_sum_of_their_gathers(grid):
    """Three terms by their own per-cell index (one repeating on the grid, one varying
    between areas) gathered once: the same values and gradient as three gathers, and one
    gather where the three would each need their own."""
    data = _grid_data() if grid else _grid_data(grid_strata=0, obs_are_areas=False)
    rng = np.random.default_rng(3)
    sizes = (3, 4, 2)
    indices = [data.cell_ref, rng.integers(0, 4, size=data.n_cells),
               np.tile([0, 1, 0, 1, 1], N_AREAS)]
    inputs = [pt.dvector(f"v{k}") for k in range(3)]
    values = [rng.normal(size=n) for n in sizes]
    summed = layout.summed_by_strata(data, list(zip(inputs, indices, strict=True)))
    expected = sum(v[i] for v, i in zip(values, indices, strict=True))
    np.testing.assert_allclose(_eval(summed, inputs, values), expected, rtol=1e-14)
    weights = rng.normal(size=data.n_cells)
    grads = pytensor.grad((summed * weights).sum(), inputs)
    for got, index, size in zip(_eval(grads, inputs, values), indices, sizes, strict=True):
        np.testing.assert_allclose(got, np.bincount(index, weights=weights, minlength=size),
                                   rtol=1e-12)
    f = pytensor.function(inputs, summed)
    gathers = [node for node in f.maker.fgraph.apply_nodes
               if type(node.op).__name__.startswith("AdvancedSubtensor")
               and node.inputs[1].type.shape == (data.n_cells,)]
    assert len(gathers) == 1
    assert layout.summed_by_strata(data, []).eval().shape == (data.n_cells,)


def test_an_index_that_varies_between_areas_is_gathered_by_index():
    data = _grid_data()
    index = np.random.default_rng(2).integers(0, 3, size=data.n_cells)
    values = pt.dvector("v")
    gathered = layout.by_stratum(data, values, index)
    np.testing.assert_array_equal(_eval(gathered, [values], [np.arange(3.0)]),
                                  np.arange(3.0)[index])
    sums = layout.index_sums(data, layout.to_cells(data, values[:N_AREAS]), index, 3)
    by_area = np.arange(N_AREAS, dtype=float)
    np.testing.assert_allclose(_eval(sums, [values], [by_area]),
                               np.bincount(index, weights=by_area[data.cell_area],
                                           minlength=3), rtol=1e-14)


def test_grids_are_recognised_only_when_complete_and_in_order():
    strata = np.tile(["a", "b", "c"], 4)
    cell_area = np.repeat(np.arange(4), 3)
    assert layout.grid_strata(cell_area, strata, 4) == 3
    assert layout.grid_strata(cell_area[:-1], strata[:-1], 4) == 0  # a cell missing
    swapped = strata.copy()
    swapped[[3, 4]] = swapped[[4, 3]]  # one area's strata in another order
    assert layout.grid_strata(cell_area, swapped, 4) == 0
    assert layout.grid_strata(cell_area[::-1].copy(), strata, 4) == 0  # not area-major
    pairs = np.arange(12)
    assert layout.obs_are_areas(cell_area, pairs, cell_area, np.zeros(12), 4, 4)
    assert not layout.obs_are_areas(cell_area, pairs, cell_area, np.ones(12), 4, 4)
    assert not layout.obs_are_areas(cell_area, pairs, cell_area, np.zeros(12), 5, 4)


def _data_dir() -> Path | None:
    env = os.environ.get("GAPMODEL_DATA_DIR")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if (path / "qof_2022_23_prevalence_by_practice_all_registers.csv").is_file() \
        else None


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(_data_dir() is None, reason="England data not found")
def test_england_model_is_the_same_with_and_without_the_grid(monkeypatch):
    """Dementia by PCN (a complete 1,311 x 12 grid with some empty registers): the log
    density and its gradient, which the Laplace collapse differentiates twice more, agree
    at jittered points with the grid's reshapes and with plain indexing."""
    from gapmodel.sources import load_spec_data

    spec = ModelSpec.from_yaml(ROOT / "models" / "dementia_england_pcn.yaml")
    dataset, _ = load_spec_data(spec, str(_data_dir()))
    data = prepare(dataset, spec)
    assert data.grid_strata == 12 and data.obs_are_areas
    results = []
    for grid in (True, False):
        if not grid:
            import gapmodel.model as model_module

            monkeypatch.setattr(model_module, "prepare", lambda *args: dataclasses.replace(
                prepare(*args), grid_strata=0, obs_are_areas=False))
        model, _ = build_model(dataset, spec)
        function = model.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
        function.set_extra_values({})
        start = model.initial_point()
        x0 = np.concatenate([np.ravel(start[v.name]) for v in function._grad_vars])
        rng = np.random.default_rng(0)
        results.append([function(x0 + rng.normal(0, 0.1, x0.shape)) for _ in range(2)])
        # numba caches the compiled function across processes only if no constant in it
        # exceeds 1 MB (gapmodel.model.runtime_constant)
        graph = function._pytensor_function.maker.fgraph
        large = [v for v in graph.variables if isinstance(v, TensorConstant)
                 and v.data.nbytes > 1_000_000]
        assert not large
    for (value, grad), (plain_value, plain_grad) in zip(*results, strict=True):
        assert np.isfinite(value)
        assert value == pytest.approx(plain_value, rel=1e-10)
        np.testing.assert_allclose(grad, plain_grad, rtol=1e-7, atol=1e-9)


def test_large_constants_go_in_at_run_time():
    from gapmodel.model import runtime_constant

    small, large = np.ones(1000), np.ones(200_000)
    assert runtime_constant(small) is small
    shared = runtime_constant(large)
    assert not isinstance(shared, np.ndarray)
    np.testing.assert_array_equal(shared.get_value(), large)


def _completeness_data(shuffle: int) -> ModelData:
    """The synthetic scenario's registers by recorded ethnicity (30 areas): each cell one
    recorded count, not-stated counts within an area; pairs and counts shuffled."""
    from gapmodel.simulate import simulate

    spec = ModelSpec.from_yaml(ROOT / "models" / "synthetic_icb.yaml")
    data = prepare(simulate(n_areas=30, seed=4).dataset, spec)
    rng = np.random.default_rng(shuffle)
    pairs = rng.permutation(len(data.pair_obs))
    renamed = rng.permutation(len(data.obs_lo))  # count j becomes renamed[j]
    moved = np.argsort(renamed)
    return dataclasses.replace(
        data, pair_obs=renamed[data.pair_obs[pairs]], pair_cell=data.pair_cell[pairs],
        pair_kind=data.pair_kind[pairs], obs_lo=data.obs_lo[moved],
        obs_hi=data.obs_hi[moved], obs_population=data.obs_population[moved])


@pytest.mark.parametrize("shuffle", [0, 1])
def test_counts_by_recorded_attribute_are_the_weighted_totals(shuffle):
    """Recorded counts cell by cell and not-stated totals weighted once per count: in
    `completeness_order`, the values and gradient of the pairs' weighted totals."""
    data = _completeness_data(shuffle)
    order = layout.completeness_order(data)
    assert order is not None and sorted(order) == list(range(len(data.obs_lo)))
    rng = np.random.default_rng(5)
    cells, rho = pt.dvector("cells"), pt.dvector("rho")
    at = [rng.uniform(1, 5, size=data.n_cells), rng.uniform(0.5, 0.95, size=len(data.areas))]
    weight = pt.switch(pt.eq(data.pair_kind, 1), rho[data.cell_area[data.pair_cell]],
                       1 - rho[data.cell_area[data.pair_cell]])
    plain = layout.obs_totals(data, cells, weight)[order]
    fast = layout.register_totals(data, cells, rho, order)
    probe = rng.normal(size=len(data.obs_lo))  # a linear function of the totals
    for a, b in [(plain, fast)] + [
            (pytensor.grad((plain * probe).sum(), v), pytensor.grad((fast * probe).sum(), v))
            for v in (cells, rho)]:
        np.testing.assert_allclose(_eval(b, [cells, rho], at), _eval(a, [cells, rho], at),
                                   rtol=1e-12)


def test_other_layouts_keep_their_pairs():
    data = _completeness_data(0)
    two_areas = data.pair_cell.copy()
    first = np.flatnonzero(data.pair_kind == 2)[0]
    other = np.flatnonzero(data.cell_area != data.cell_area[two_areas[first]])[0]
    two_areas[first] = other  # a not-stated count over two areas
    assert layout.completeness_order(dataclasses.replace(data, pair_cell=two_areas)) is None
    plain = dataclasses.replace(data, pair_kind=np.zeros_like(data.pair_kind))
    assert layout.completeness_order(plain) is None
