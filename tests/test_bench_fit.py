"""bench/fit.py: its table and the library at other revisions, side by side."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from bench_support import load_bench


@pytest.fixture(scope="module")
def fit():
    return load_bench("fit")


def _row(rev: str, cells: int, us: float) -> dict:
    return {"spec": "synthetic_icb", "rev": rev, "sampler": "nutpie", "blas": 1,
            "adapt": "low_rank", "cells": cells, "wall_s": 100.0, "compile_s": 10.0,
            "min_ess": 412.0, "ess_per_s": 4.12, "divergences": 0, "peak_mb": 900.0,
            "grads_warmup": 54.6, "grads_draw": 29.6, "us_per_grad_cell": us,
            "worst": "gamma0"}


def test_report_has_a_row_and_a_curve_per_revision(fit):
    rows = [_row("abc1234", 9_502, 0.094), _row("abc1234", 28_239, 0.087),
            _row("work", 9_502, 0.090), _row("work", 28_239, 0.081),
            {"spec": "synthetic_icb", "rev": "work", "sampler": "numpyro", "blas": 1,
             "adapt": "-", "note": "numpyro not installed"}]
    text = fit.report(rows)
    lines = text.splitlines()
    assert "grads/draw warm-up, after" in lines[0] and "rev" in lines[0]
    assert sum("54.6,      29.6" in line for line in lines) == 4
    assert "numpyro not installed" in text
    curves = [line for line in lines if "9,502: " in line]
    assert len(curves) == 2
    assert "abc1234" in curves[0] and "28,239: 0.087" in curves[0]
    assert "work" in curves[1] and "28,239: 0.081" in curves[1]


def test_checkouts_give_each_revision_its_own_tree_and_clean_up(fit):
    common = sys.modules["common"]
    root = common.ROOT
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    with common.checkouts(["HEAD", None]) as trees:
        head, work = trees["HEAD"], trees[None]
        assert work == root
        assert head != root and (head / "gapmodel" / "model.py").is_file()
    assert not head.exists()
    listed = subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True,
                            text=True).stdout
    assert str(head) not in listed


def test_geometry_finds_the_narrow_diagonal():
    """bench/geometry.py: on draws with one strongly correlated pair, the smallest
    eigenvalue of the scaled correlation is that pair's difference."""
    geometry = load_bench("geometry")
    rng = np.random.default_rng(0)
    shared = rng.normal(size=4000)
    draws = np.column_stack([shared + 0.05 * rng.normal(size=4000),
                             10 * (shared + 0.05 * rng.normal(size=4000)),
                             rng.normal(size=4000), rng.normal(size=4000)])
    lines = geometry.directions(draws, ["a[0]", "b[0]", "c[0]", "d[0]"], count=1, terms=2)
    smallest, largest = lines
    assert float(smallest.split()[0]) < 0.01 and float(largest.split()[0]) > 1.9
    assert "a[0]" in smallest and "b[0]" in smallest
    assert "+0.71" in smallest and "-0.71" in smallest


def test_geometry_preconditioned_hessian_names_what_the_diagonal_misses():
    """bench/geometry.py --hessian: on a Gaussian whose two small variables are strongly
    correlated, the block + diagonal preconditioner (from the draws) leaves the Hessian
    near the identity, while the diagonal alone leaves the pair's narrow direction as
    its largest eigenvalue."""
    geometry = load_bench("geometry")
    rng = np.random.default_rng(1)
    n = 40  # a vector larger than a dense-block variable, then two scalars
    cov = np.diag(rng.uniform(0.5, 2.0, n + 2))
    cov[n:, n:] = [[1.0, 0.98 * 3.0], [0.98 * 3.0, 9.0]]
    precision = np.linalg.inv(cov)
    draws = rng.multivariate_normal(np.zeros(n + 2), cov, size=20_000)
    labels = [f"z[{i}]" for i in range(n)] + ["a[0]", "b[0]"]
    roots = geometry.preconditioners(draws, [n, 1, 1])
    values, _ = geometry.spectrum(lambda x: -precision @ x, draws[0], roots["block + diagonal"])
    assert np.allclose(values, 1.0, atol=0.05)
    values, vectors = geometry.spectrum(lambda x: -precision @ x, draws[0], roots["diagonal"])
    assert values[-1] == pytest.approx(1 / (1 - 0.98), rel=0.1)
    top = geometry.spectrum_lines(values, vectors, roots["diagonal"], labels, count=1)[1]
    # the curvature's own square root: the identity, wherever it is taken (a Gaussian)
    root = geometry.hessian_root(lambda x: -precision @ x, draws[1])
    assert np.allclose(geometry.spectrum(lambda x: -precision @ x, draws[2], root)[0], 1.0)
    first, second = top.split(", ")[:2]  # the pair loads most, with opposite signs
    assert {first.split()[1], second.split()[0]} == {"a[0]", "b[0]"}
    assert first.split()[2][0] != second.split()[1][0]


def test_geometry_tuning_lines_show_where_each_chain_spends_its_tuning():
    """bench/geometry.py: per chain, the gradients a draw in each adaptation window of a
    first fit's tuning (Stan's windows over 400 steps) and after, its step size, the wall
    time a gradient after tuning and the low-rank term's range."""
    import xarray as xr

    geometry = load_bench("geometry")
    steps = np.full((2, 400), 31.0)
    steps[1, 25:75] = 127.0  # the second chain's second window takes four times the work
    warmup = xr.Dataset({"n_steps": (("chain", "draw"), steps)})
    stats = xr.Dataset({"n_steps": (("chain", "draw"), np.full((2, 10), 15.0)),
                        "step_size": (("chain", "draw"), np.full((2, 10), 0.2))})
    lines = geometry.tuning_lines(warmup, stats, 400)
    assert "0-25, 25-75, 75-350, 350-400" in lines[0]
    assert lines[1] == "  chain 0: 31 / 31 / 31 / 31; after 15; step 0.200"
    assert lines[2] == "  chain 1: 31 / 127 / 31 / 31; after 15; step 0.200"
    stats["largest_eigval"] = (("chain", "draw"), np.array([[np.nan] * 10, [9.5] * 10]))
    stats["smallest_eigval"] = (("chain", "draw"), np.array([[np.nan] * 10, [0.25] * 10]))
    lines = geometry.tuning_lines(warmup, stats, 400)
    assert lines[1] == "  chain 0: 31 / 31 / 31 / 31; after 15; step 0.200"
    assert lines[2].endswith("step 0.200; low rank 9.5 to 0.25")
    # 10 draws of 15 gradients in 0.3 s: 2 ms a gradient; the second chain twice that
    stats["perf_counter_diff"] = (("chain", "draw"), np.array([[0.03] * 10, [0.06] * 10]))
    lines = geometry.tuning_lines(warmup, stats, 400)
    assert lines[1] == "  chain 0: 31 / 31 / 31 / 31; after 15; step 0.200; 2.00 ms a gradient"
    assert lines[2].endswith("step 0.200; 4.00 ms a gradient; low rank 9.5 to 0.25")
