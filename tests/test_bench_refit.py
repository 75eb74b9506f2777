"""bench/warmstart.py, bench/derive.py and bench/gradient.py: their rows and tables."""

from __future__ import annotations

import pytest
from bench_support import load_bench


@pytest.fixture(scope="module")
def warmstart():
    return load_bench("warmstart")


@pytest.fixture(scope="module")
def derive():
    return load_bench("derive")


@pytest.fixture(scope="module")
def gradient():
    return load_bench("gradient")


def test_warm_rows_follow_the_spec_or_the_pairs_given(warmstart):
    spec = "models/hypertension_england_pcn.yaml"
    assert warmstart._warm_rows(spec, None, no_cold=False) == [None, (300, 1500)]
    assert warmstart._warm_rows(spec, [100, 200, 300, 400], no_cold=True) == [(100, 200),
                                                                           (300, 400)]
    # a spec without warm-start lengths still gets a warm row
    assert warmstart._warm_rows("models/dementia_england_pcn.yaml", None, False) == [
        None, (300, 1000)]
    assert warmstart._warm_rows("models/synthetic_icb.yaml", None, True) == [(300, 1500)]


def test_warmstart_table(warmstart):
    row = {"spec": "synthetic_icb", "areas": 1000, "scale": 1.05, "rev": "HEAD", "start": "warm",
           "seed": 1,
           "sampler": "pymc",
           "tune": 300, "draws": 800, "accept": 0.9, "wall_s": 258.0, "start_s": 12.5,
           "derive_s": 30.5, "min_ess": 489.0,
           "worst": "sigma_u", "ess_per_s": 1.89, "max_rhat": 1.006, "grads_draw": 31.0,
           "step": 0.221, "divergences": 0, "gate": True}
    text = warmstart.report([row, {"spec": "hypertension_england_pcn", "start": "cold",
                                   "note": "stopped: not finished in 900 s"}])
    lines = text.splitlines()
    assert lines[0].split()[:15] == ["spec", "areas", "data", "rev", "start", "seed",
                                     "sampler", "tune", "draws", "accept", "wall", "s",
                                     "start", "s", "derive"]
    assert lines[1].split() == ["synthetic_icb", "1000", "x1.05", "HEAD", "warm", "1", "pymc",
                                "300",
                                "800", "0.90", "258.0", "12.5", "30.5", "489", "1.89", "1.006",
                                "31.0",
                                "0.221", "0", "yes", "sigma_u"]
    assert lines[2].endswith("stopped: not finished in 900 s")


def test_derive_table(derive):
    row = {"spec": "hypertension_england_pcn", "rev": "HEAD", "draws": 3000, "cells": 15732,
           "build_s": 1.3, "derive_s": 25.1, "ms_per_draw": 8.4, "peak_mb": 1830.0,
           "gap_mean": 4876319.0, "gap_q5": 4337291.0, "gap_q95": 5441668.0}
    lines = derive.report([row]).splitlines()
    assert "ms/draw" in lines[0]
    assert lines[1].split() == ["hypertension_england_pcn", "HEAD", "3000", "15732", "1.3",
                                "25.1", "8.4", "1830", "4,876,319", "[4,337,291,",
                                "5,441,668]"]


def test_gradient_table_and_the_curves_spread(gradient):
    def row(rev, areas, cells, us, scale=1.0):
        return {"spec": "synthetic_icb", "rev": rev, "areas": areas, "cells": cells,
                "scale": scale,
                "build_s": 1.0, "compile_s": 10.0, "ms": us * cells / 1e3, "us_per_cell": us,
                "peak_mb": 500.0, "logp": -1234.5}

    rows = [row("work", 100, 10_000, 0.08), row("work", 1000, 100_000, 0.10),
            row("work", 3000, 300_000, 0.09), row("HEAD", 1000, 100_000, 0.2),
            row("HEAD", 1000, 100_000, 0.2), row("work", 1000, 100_000, 0.5, scale=1.05)]
    lines = gradient.report(rows).splitlines()
    assert lines[0].split()[:5] == ["spec", "rev", "data", "areas", "cells"]
    assert lines[2].split() == ["synthetic_icb", "work", "x1", "1000", "100000", "1.0",
                                "10.0", "10.00", "0.100", "500", "-1234.500000"]
    assert lines[6].split()[2] == "x1.05"
    # the spread is stated over distinct sizes of the data as is: 0.10 is 11% above the
    # mean 0.09
    spread = [line for line in lines if "cost per cell" in line]
    assert spread == ["synthetic_icb at work: cost per cell within +-11% of its mean "
                      "(0.090 us) over 3 sizes"]
