"""The cost of one log density + gradient, per cell, across sizes and revisions.

    .venv/bin/python bench/gradient.py                     # England by PCN, synthetic default
    .venv/bin/python bench/gradient.py --specs models/synthetic_icb.yaml \
        --areas 100 300 1000 3000                          # the cost-per-cell curve
    .venv/bin/python bench/gradient.py --specs models/hypertension_england_pcn.yaml \
        --revisions 8a90125 HEAD                           # the library at two commits
    .venv/bin/python bench/gradient.py --specs models/hypertension_england_pcn.yaml \
        --scales 1 1.05 1.1                                # new data for the same areas

A sampler's wall time is gradients per draw times the cost of one gradient; this times
the second alone, without sampling, so that sizes a fit could not finish (300,000 cells)
still get a row. Per (spec, size, revision), in a fresh process with one BLAS thread: build
the model, compile its log density and gradient with PyTensor's numba backend (the one
nutpie uses), and call it at `--points` points (the model's initial point, each
coordinate moved by a seeded N(0, 0.1^2)); a point's time is its best of 5 calls, the row's
the median over points. Prints build and compile time, milliseconds per call,
microseconds per cell, peak memory and the log density at the first point, which must
agree across revisions of one model (the same points). The curve's spread is the largest
distance of a row's cost per cell from the rows' mean, in percent. `--scales` adds rows
with every population multiplied by each factor (the `data` column): new data for the same
areas, strata and registers, as a recalibration brings, whose compile time shows whether
numba's cache still holds the compiled function.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from itertools import product
from pathlib import Path

from common import (
    ROOT,
    add_revisions_option,
    checkouts,
    limit_blas,
    machine_line,
    run_at,
    scaled_populations,
    spec_file,
)

DEFAULT_SPECS = ("models/hypertension_england_pcn.yaml", "models/synthetic_icb.yaml")


def run_one(spec_path: str, areas: int | None, data_dir: str, points: int,
            scale: float = 1.0) -> dict:
    """Build, compile and time the spec's log density and gradient in this process, with
    every population multiplied by `scale`."""
    import numpy as np

    from gapmodel.model import build_model
    from gapmodel.sources import load_spec_data
    from gapmodel.spec import ModelSpec

    limit_blas(1)
    spec = ModelSpec.from_yaml(spec_file(spec_path))
    if areas is not None and spec.data.kind == "simulate":
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"areas": areas})})
    dataset = scaled_populations(load_spec_data(spec, data_dir)[0], scale)
    start = time.perf_counter()
    model, data = build_model(dataset, spec)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    function = model.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
    function.set_extra_values({})
    initial = model.initial_point()
    x0 = np.concatenate([np.ravel(initial[v.name]) for v in function._grad_vars])
    value, _ = function(x0)  # the first call finishes numba's compilation
    compile_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    times, first = [], None
    for _ in range(points):
        x = x0 + rng.normal(0.0, 0.1, size=x0.shape)
        best = np.inf
        for _ in range(5):
            t = time.perf_counter()
            value, _ = function(x)
            best = min(best, time.perf_counter() - t)
        first = float(value) if first is None else first
        times.append(best)
    ms = 1e3 * float(np.median(times))
    return {"spec": spec.name, "scale": scale, "areas": len(data.areas), "cells": data.n_cells,
            "build_s": build_s, "compile_s": compile_s, "ms": ms,
            "us_per_cell": 1e3 * ms / data.n_cells, "logp": first,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=list(DEFAULT_SPECS))
    parser.add_argument("--areas", nargs="+", type=int, default=[None],
                        help="areas of a simulated spec, a row for each (the curve)")
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--data", default=os.environ.get("GAPMODEL_DATA_DIR",
                                                         str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0],
                        help="populations times each factor, a row for each")
    add_revisions_option(parser)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.specs[0], args.areas[0], args.data, args.points,
                                 args.scales[0])))
        return
    print(machine_line(1, None), flush=True)
    rows = []
    with checkouts(args.revisions) as trees:
        for spec in args.specs:
            for areas, rev, scale in product(args.areas, args.revisions, args.scales):
                cmd = [sys.executable, __file__, "--one", "--specs", spec, "--data",
                       args.data, "--points", str(args.points), "--scales", str(scale)]
                if areas:
                    cmd += ["--areas", str(areas)]
                row = run_at(cmd, {"spec": Path(spec).stem}, trees[rev], rev,
                             args.timeout)
                print("done:", _format(row), flush=True)
                rows.append(row)
    print()
    print(report(rows))


def report(rows: list[dict]) -> str:
    lines = [f"{'spec':26} {'rev':>8} {'data':>6} {'areas':>6} {'cells':>8} {'build s':>8} "
             f"{'compile s':>9} {'ms/call':>8} {'us/cell':>8} {'peak MB':>8} {'logp':>16}"]
    lines += [_format(row) for row in rows]
    for spec in dict.fromkeys(row["spec"] for row in rows):
        for rev in dict.fromkeys(row["rev"] for row in rows):
            curve = [r for r in rows if r["spec"] == spec and r["rev"] == rev
                     and "note" not in r and r.get("scale", 1.0) == 1.0]
            costs, sizes = [r["us_per_cell"] for r in curve], {r["cells"] for r in curve}
            if len(sizes) > 1:
                mean = sum(costs) / len(costs)
                spread = max(abs(c - mean) for c in costs) / mean
                lines.append(f"{spec} at {rev}: cost per cell within +-{100 * spread:.0f}% "
                             f"of its mean ({mean:.3f} us) over {len(sizes)} sizes")
    return "\n".join(lines)


def _format(row: dict) -> str:
    head = f"{row['spec']:26} {row.get('rev', 'work'):>8}"
    if "note" in row:
        return f"{head} {row['note']}"
    data = f"x{row.get('scale', 1.0):g}"
    return (f"{head} {data:>6} {row['areas']:6d} {row['cells']:8d} {row['build_s']:8.1f} "
            f"{row['compile_s']:9.1f} {row['ms']:8.2f} {row['us_per_cell']:8.3f} "
            f"{row['peak_mb']:8.0f} {row['logp']:16.6f}")


if __name__ == "__main__":
    main()
